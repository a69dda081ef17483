"""The arbiter: what the daemon claims before any worker starts, how it refuses to start, and how its
staged shutdown answers signals. Real daemons, a real redis-server, the loopback origin."""

from __future__ import annotations

import signal
import subprocess
import time

from shmfetch.cluster import streams
from shmfetch.cluster.client import enqueue

from .helpers import Daemon, daemon_stats, wait_for, write_config


def test_a_second_stop_signal_during_teardown_cuts_the_wait_for_a_down_redis_short(
    tmp_path, origin, redis_server
):
    cfg = write_config(
        tmp_path, daemon={"workers": 1, "drain_timeout": 30}, cluster={"redis": redis_server.url}
    )
    d = Daemon(cfg, tmp_path / "shmfetch.sock")
    try:
        r = redis_server.client()
        list(enqueue(r, streams.DEFAULT_JOBS, [origin.url(f"/slow?s=2&n={i}") for i in range(2)]))
        wait_for(lambda: daemon_stats(d.socket)["cluster"]["claimed"] >= 2, 20, "the jobs claimed")
        redis_server.stop()  # the results of the jobs in progress now have nowhere to go
        wait_for(lambda: daemon_stats(d.socket)["ok_delivered"] >= 2, 20, "the fetches done")
        d.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "exited: exit status 0" in d.stderr, 20, "the teardown")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("the second signal did not cut the wait for Redis short") from None
        elapsed = time.monotonic() - t0
    finally:
        if d.proc.poll() is None:
            d.stop(timeout=60)
    d.stdout, _ = d.proc.communicate(timeout=10)
    assert d.proc.returncode == 0, d.stderr
    assert elapsed < 10
    assert "2 result(s) not committed" in d.stderr
    assert d.last_line() == "downloaded 2 URLs"
