"""The daemon-level crash-point matrix: a worker SIGKILLed at each agreed step of the ring, the
counter and its own loop, once (``SHMFETCH_FAULT=POINT:N:MARKER``, faults.py), in a real daemon.

At every point: the fault fired; the worker is back within 1 s; every request is answered exactly once,
and ok (one crash gives a taken request one strike, and it is retried); the printed count equals the ok
answers; SIGUSR1 completes within ``drain_timeout`` + 2 s. ``ring.put.after_head`` also proves that a result
published with no wake-up posted does not hang the master (on the old ring it did, for good).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from shmfetch import Client
from shmfetch.ipc import faults

from .helpers import daemon_stats, page_text, running_daemon, wait_for

POINTS = [
    "ring.put.after_payload",
    "ring.put.after_head",
    "ring.put.after_post",
    "ring.put.between_fragments",
    "ring.get.after_read",
    "ring.get.after_tail",
    "counter.after_lock",
    "counter.in_critical",
    "worker.after_take",
    "worker.after_commit",
]
DRAIN = 5
# A small result ring (4 KiB of slots, so a fragment is at most ~1 KiB): the big pages' results are
# fragmented, and ring.put.between_fragments is reached.
RING = {"result_slots": 16, "result_slot_size": 256}


def _urls(origin) -> list[str]:
    urls = []
    for i in range(40):
        urls.append(origin.url(f"/page/{i}"))
        if i % 4 == 0:
            urls.append(origin.url(f"/page?size=6000&title=T{i}"))
    return urls


def _expected_text(url: str) -> str | None:
    tail = url.rsplit("/", 1)[1]
    return page_text(int(tail)) if tail.isdigit() else None


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_a_worker_killed_at_this_point_costs_nothing(tmp_path, origin, monkeypatch, point):
    marker = tmp_path / "fired"
    monkeypatch.setenv(faults.ENV, f"{point}:2:{marker}")  # the 2nd time: after some normal traffic
    urls = _urls(origin)
    cfg = {"workers": 2, "threads": 2, "drain_timeout": DRAIN}
    with running_daemon(tmp_path, daemon=cfg, ring=RING) as d:
        results: list = []
        failure: list[BaseException] = []

        def client() -> None:
            try:
                with Client(d.socket, timeout=60) as c:
                    results.extend(c.fetch_many(urls, concurrency=16))
            except BaseException as e:  # surfaced below
                failure.append(e)

        t = threading.Thread(target=client)
        t.start()
        try:
            wait_for(marker.exists, 30, f"the fault at {point} to fire")
            fired = marker.stat().st_mtime

            def back() -> bool:
                st = daemon_stats(d.socket)
                return sum(w["restarts"] for w in st["workers"]) >= 1 and all(
                    w["alive"] for w in st["workers"]
                )

            wait_for(back, 10, "the worker to be respawned", step=0.02)
            assert time.time() - fired < 1.0, f"worker back {time.time() - fired:.2f}s after the kill"
        finally:
            t.join(timeout=90)
        assert not t.is_alive() and not failure, failure
        t0 = time.monotonic()
        rc, _ = d.stop(timeout=DRAIN + 10)
        took = time.monotonic() - t0
    assert rc == 0
    assert took < DRAIN + 2, f"SIGUSR1 took {took:.1f}s"
    assert Counter(r.url for r in results) == Counter(urls)  # every request answered exactly once
    assert all(r.ok for r in results), [(r.url, r.error) for r in results if not r.ok]
    for r in results:
        if (want := _expected_text(r.url)) is not None:
            assert r.text == want
    assert d.last_line() == f"downloaded {len(results)} URLs"
