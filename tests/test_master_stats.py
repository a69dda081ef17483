"""``stats`` figures a user reads as they are: rates over the time the daemon has actually run, and the
cluster's group figures at most about a second old, or marked with their age."""

from __future__ import annotations

import time

import pytest
import redis

from shmfetch import Client
from shmfetch.cluster import streams
from shmfetch.cluster.client import enqueue

from .helpers import daemon_stats, run_cli, running_daemon, wait_for
from .test_cluster_streams import cluster_daemon, stop_all

JOBS, GROUP = streams.DEFAULT_JOBS, streams.DEFAULT_GROUP


@pytest.mark.slow
def test_rates_divide_by_the_time_the_daemon_has_run(tmp_path, origin):
    """30 pages in a daemon's first seconds: the 60 s rate used to divide by 60 all the same."""
    with running_daemon(tmp_path) as d:
        with Client(d.socket, timeout=30) as c:
            assert all(r.ok for r in c.fetch_many(origin.url(f"/page/{i}") for i in range(30)))
        # Measured two seconds in or later: a rate over less than a second is not shown as one.
        time.sleep(max(0.0, 2.0 - daemon_stats(d.socket)["uptime_s"]))
        st = daemon_stats(d.socket)
    assert st["uptime_s"] < 10, "the daemon ran too long for this check"
    for window in ("pages_per_s_10s", "pages_per_s_60s"):
        assert st[window] == pytest.approx(30 / st["uptime_s"], rel=0.25), (window, st)


def _pending(r: redis.Redis) -> int:
    """XPENDING's count of the group; 0 until the daemon has created the group."""
    try:
        return r.xpending(JOBS, GROUP)["pending"]
    except redis.ResponseError:
        return 0


@pytest.mark.slow
def test_group_figures_are_at_most_a_second_old_and_show_their_age(tmp_path, origin, redis_server):
    """With the default claim_idle the figures were read every 5 s: 'consumers 0' and a stale 'pending'
    for seconds into a run. When Redis stops answering, stats says how old they are."""
    r = redis_server.client()
    d = cluster_daemon(tmp_path, "a", redis_server.url, claim_idle=60, workers=1)
    try:
        # as many slow jobs as the one worker has fetch threads (4): the daemon takes what it can start
        list(enqueue(r, JOBS, (origin.url(f"/slow?s=5&n={i}") for i in range(4))))
        wait_for(lambda: _pending(r) == 4, timeout=10, what="the jobs taken")
        seen = time.monotonic()
        st = wait_for(
            lambda: (c := daemon_stats(d.socket)["cluster"])["pending"] == 4 and c, timeout=3, what="pending 4"
        )
        assert time.monotonic() - seen < 2.5
        assert st["consumers"] == 1 and st["figures_age_s"] <= 1.5, st
        assert "(group figures" not in run_cli("stats", "--socket", d.socket, timeout=20).stdout
        r.close()
        redis_server.stop()
        time.sleep(3)
        st = daemon_stats(d.socket)["cluster"]
        shown = run_cli("stats", "--socket", d.socket, timeout=20).stdout
    finally:
        stop_all(d)
    assert st["figures_age_s"] >= 2.5, st
    assert f"(group figures {st['figures_age_s']:.0f} s old)" in shown or "s old)" in shown, shown
