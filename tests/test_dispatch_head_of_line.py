"""Head-of-line waits at the default credit, against a real daemon: requests never wait in the ring of a
worker whose fetch threads are all busy with slow fetches while another worker has a free thread."""

from __future__ import annotations

import time

import pytest

from shmfetch import Client

from .helpers import page_text, running_daemon

SLOW_S = 8


@pytest.mark.slow
def test_fast_requests_do_not_wait_behind_a_worker_busy_with_slow_fetches(tmp_path, origin):
    """2 workers x 2 threads, credit at its default (64 per worker). Two slow fetches take both threads of
    one worker; the 20 fast requests behind them are answered by the other, each well within the slow
    delay (on the old round robin every other one waited in the busy worker's ring for the slow ones)."""
    slow = [origin.url(f"/slow?s={SLOW_S}&hol={i}") for i in range(2)]
    fast = [origin.url(f"/page/{i}") for i in range(20)]
    urls = [slow[0], fast[0], slow[1], *fast[1:]]  # alternating at first: the slow ones share a worker
    with running_daemon(tmp_path, daemon={"workers": 2, "threads": 2}, fetch={"timeout": SLOW_S + 5}) as d:
        with Client(d.socket, timeout=60) as c:
            assert c.fetch(origin.url("/page/99")).ok  # warm-up, so start-up costs are not measured
            c.fetch(origin.url("/page/98"))  # the turn is back at worker 0
            assert c.stats()["workers"][0]["in_flight"] == 0
            t0 = time.monotonic()
            answered = {r.url: (r, time.monotonic() - t0) for r in c.fetch_many(urls, concurrency=len(urls))}
        d.stop()
    assert len({answered[u][0].worker for u in slow}) == 1 and all(answered[u][0].ok for u in slow)
    late = {u: round(t, 2) for u, (r, t) in answered.items() if u in fast and t >= SLOW_S / 2}
    assert not late, f"fast requests answered after the slow ones' delay: {late}"
    assert all(answered[u][0].ok and answered[u][0].text == page_text(i) for i, u in enumerate(fast))
