"""Re-dispatch by consumer position (issue 9, finding 5): a dead worker's requests that it never took from
its ring go back to the queue without a strike; only the ones it had taken count toward retry-once."""

from __future__ import annotations

import os
import random
import signal
import threading
from collections import Counter

from shmfetch import Client

from .helpers import Daemon, page_text, running_daemon


def _killer(d: Daemon, stop: threading.Event, every: float, killed: list[int]) -> None:
    rnd = random.Random(9)
    while not stop.wait(every):
        pids = d.worker_pids()
        if pids:
            victim = rnd.choice(pids)
            try:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            except ProcessLookupError:
                pass


def test_kill_a_random_worker_every_300ms_through_1500_requests(tmp_path, origin):
    n = 1500
    urls = [origin.url(f"/page/{i}") for i in range(n)]
    with running_daemon(tmp_path, daemon={"workers": 3, "threads": 4, "drain_timeout": 20}) as d:
        stop, killed = threading.Event(), []
        killer = threading.Thread(target=_killer, args=(d, stop, 0.3, killed))
        killer.start()
        try:
            with Client(d.socket, timeout=120) as c:
                results = list(c.fetch_many(urls, concurrency=96))
        finally:
            stop.set()
            killer.join()
        rc, _ = d.stop()
    oks = [r for r in results if r.ok]
    crashed = [r for r in results if r.error == "worker_crashed"]
    print(f"\n{n} requests, {len(killed)} workers killed: {len(oks)} ok, {len(crashed)} worker_crashed")
    assert rc == 0
    assert len(killed) >= 5, "the storm did not happen"
    assert Counter(r.url for r in results) == Counter(urls)  # every request answered exactly once
    assert len(oks) + len(crashed) == n
    assert all(r.text == page_text(int(r.url.rsplit("/", 1)[1])) for r in oks)
    assert len(oks) >= 0.99 * n, f"{len(crashed)} worker_crashed"
    assert d.last_line() == f"downloaded {len(oks)} URLs"
