"""The arbiter: what the daemon claims before any worker starts, how it refuses to start, and how its
staged shutdown answers signals. Real daemons, a real redis-server, the loopback origin."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

from shmfetch.cluster import streams
from shmfetch.cluster.client import enqueue
from shmfetch.ipc import names

from .helpers import Daemon, daemon_stats, run_cli, started_pids, wait_for, write_config


@pytest.mark.slow
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


# -- refusals to start: one line naming the resource and the reason, exit 2, nothing left behind --------


def _refused(tmp_path, cfg) -> subprocess.CompletedProcess:
    p = run_cli("serve", "-c", str(cfg), timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    assert "started: pid" not in p.stderr, "a worker started before every resource was claimed"
    assert "downloaded" not in p.stdout
    assert not (tmp_path / "shmfetch.pid").exists() and not (tmp_path / "shmfetch.sock").exists()
    assert names.owned_by(max(started_pids)) == []  # run_cli registered the daemon's pid
    return p


def test_a_log_file_in_a_missing_directory_is_refused_in_one_line(tmp_path):
    cfg = write_config(tmp_path, daemon={"log_file": tmp_path / "missing" / "shmfetch.log"})
    p = _refused(tmp_path, cfg)
    assert p.stderr.strip() == (
        f"shmfetch: cannot open log file {tmp_path}/missing/shmfetch.log: No such file or directory"
    )


def test_a_config_file_that_is_not_utf8_is_refused_in_one_line(tmp_path):
    cfg = write_config(tmp_path)
    cfg.write_bytes(cfg.read_bytes() + b"; caf\xe9 au lait\n")
    p = _refused(tmp_path, cfg)
    assert p.stderr.strip().startswith(f"shmfetch: config error: config '{cfg}' is not UTF-8 text:"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_an_http_port_in_use_is_refused_before_any_worker_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path, http={"listen": f"127.0.0.1:{port}"})
        p = _refused(tmp_path, cfg)
    line = f"shmfetch: cannot listen for HTTP on 127.0.0.1:{port}: "
    assert line in p.stderr and "address already in use" in p.stderr, p.stderr
