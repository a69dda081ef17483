"""Dispatch: round robin among the workers that have credit (free slots), so a worker full of slow fetches
holds up nobody else; against real daemons."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from shmfetch import Client

from .helpers import page_text, running_daemon, wait_workers_ready


@pytest.mark.slow
def test_split_is_exactly_even_while_every_worker_has_credit(tmp_path, origin):
    """While every worker has a free fetch thread (4 threads each, 6 requests in flight), the i-th request
    goes to worker i mod 3. Measured once every worker is ready: one still booting takes nothing, so its
    threads count as busy and it is skipped."""
    workers, per_worker = 3, 12
    urls = [origin.url(f"/page/{i}") for i in range(workers * per_worker)]
    with running_daemon(tmp_path, daemon={"workers": workers}) as d:
        wait_workers_ready(d.socket)
        with Client(d.socket, timeout=60) as c:
            results = list(c.fetch_many(urls, concurrency=6))
        d.stop()
    assert all(r.ok for r in results)
    assert Counter(r.worker for r in results) == {i: per_worker for i in range(workers)}
    # in turn: the i-th request went to worker i mod 3
    assert all(r.worker == urls.index(r.url) % workers for r in results)


@pytest.mark.slow
def test_a_worker_full_of_slow_fetches_never_holds_up_the_others(tmp_path, origin):
    """Two 5 s URLs fill worker 0 (credit 2); the instant URLs queued behind them must skip it."""
    slow = [origin.url(f"/slow?s=5&n={i}") for i in range(2)]
    instant = [origin.url(f"/page/{i}") for i in range(12)]
    urls = [slow[0], instant[0], slow[1], *instant[1:]]  # alternating: worker 0 gets only the slow ones
    cfg = {"workers": 2, "threads": 2, "max_inflight_per_worker": 2}
    with running_daemon(tmp_path, daemon=cfg, fetch={"timeout": 10}) as d:
        with Client(d.socket, timeout=60) as c:
            assert c.fetch(origin.url("/page/99")).ok  # warm-up, so start-up costs are not measured
            c.fetch(origin.url("/page/98"))  # the turn is back at worker 0
            t0 = time.monotonic()
            answered = {r.url: (r, time.monotonic() - t0) for r in c.fetch_many(urls, concurrency=len(urls))}
        d.stop()
    slow_workers = {answered[u][0].worker for u in slow}
    assert len(slow_workers) == 1 and all(answered[u][0].ok for u in slow)
    for i, u in enumerate(instant):
        r, t = answered[u]
        assert r.ok and r.text == page_text(i)
        assert r.worker not in slow_workers
        assert t < 1.0, f"{u} answered after {t:.2f}s"
