"""The collector thread on a real result ring: it brings every record a worker put, in order and in
batches, to the event loop; it ends at a closed, drained ring; an unreadable record makes it report the
ring as corrupt instead of delivering anything after it."""

from __future__ import annotations

import asyncio
import threading

from shmfetch.dispatch.collector import COLLECT_BATCH, start_collector
from shmfetch.protocol import Outcome, pack_result

from .request_path import worker_rings


def run_until_drained(w, on_corrupt=None) -> list[list]:
    """Start ``w``'s collector on a fresh loop, run the loop until the collector has ended (bounded)."""
    batches: list[list] = []
    loop = asyncio.new_event_loop()
    try:
        w.drained = asyncio.Event()

        async def main() -> None:
            start_collector(w, loop, lambda _w, batch: batches.append(batch), on_corrupt)
            await asyncio.wait_for(w.drained.wait(), 20)

        loop.run_until_complete(main())
    finally:
        loop.close()
    w.collector.join(5)
    assert not w.collector.is_alive()
    return batches


def test_every_record_arrives_in_order_in_batches_and_the_collector_ends_at_the_closed_ring():
    n = 3 * COLLECT_BATCH + 5
    with worker_rings(1) as (w,):

        def worker() -> None:  # a producer on its own thread, as a worker process would be
            for i in range(n):
                w.res.put(pack_result(i, Outcome(ok=True, text=f"page {i}")), timeout=10)
            w.res.close_wake()

        t = threading.Thread(target=worker)
        t.start()
        batches = run_until_drained(w)
        t.join(10)
    records = [r for b in batches for r in b]
    assert [r[0] for r in records] == list(range(n))
    assert records[5][5] == b"page 5"  # strings stay UTF-8 bytes: the master forwards them as they are
    assert all(1 <= len(b) <= COLLECT_BATCH for b in batches)


def test_an_unreadable_record_reports_the_ring_corrupt_and_ends_the_collector():
    corrupt = []
    with worker_rings(1) as (w,):
        w.res.put(pack_result(1, Outcome(ok=True)), timeout=1)
        w.res.put(b"\xc1", timeout=1)  # 0xc1 is never valid msgpack
        w.res.put(pack_result(2, Outcome(ok=True)), timeout=1)
        batches = run_until_drained(w, on_corrupt=corrupt.append)
    assert corrupt == [w]
    assert [r[0] for b in batches for r in b] in ([], [1])  # nothing after the bad record
