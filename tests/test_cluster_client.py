"""The cluster as its callers meet it: the commit script under a failing write, reply streams that always
expire, a follower that outlives a Redis restart, credentials masked everywhere, fresh group figures."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import redis

from shmfetch.cluster import streams
from shmfetch.cluster.client import RedisClient
from shmfetch.testing.net import free_port

from .helpers import REPO, Daemon, daemon_stats, run_cli, started_pids, wait_for, write_config
from .test_cluster_streams import cluster_daemon, stop_all

JOBS, RESULTS, GROUP = streams.DEFAULT_JOBS, streams.DEFAULT_RESULTS, streams.DEFAULT_GROUP
TOTAL, DEAD = streams.total_key(JOBS), streams.dead_key(JOBS)
CONSUMER = "test:1"


# -- the commit script ------------------------------------------------------------------------------------


def _pending_entry(r: redis.Redis) -> str:
    """One job, delivered to CONSUMER and pending under it."""
    r.xgroup_create(JOBS, GROUP, id="0", mkstream=True)
    eid = r.xadd(JOBS, {"url": "http://127.0.0.1/x"}).decode()
    r.xreadgroup(GROUP, CONSUMER, {JOBS: ">"})
    return eid


def _commit(r: redis.Redis, entry: str, ok: bool, dead: bool) -> int:
    """The daemon's call of COMMIT (cluster/intake.py) for one result."""
    frame = {"ok": ok, "url": "http://127.0.0.1/x", "text": "t" if ok else ""}
    if not ok:
        frame.update(error="worker_crashed", message="delivered too often")
    fields = streams.result_fields(entry, None, CONSUMER, frame)
    flags = ("1" if ok else "0", "1" if dead else "0", "0")
    return r.eval(streams.COMMIT, 4, JOBS, RESULTS, TOTAL, DEAD, GROUP, CONSUMER, entry, 1000, *flags, *fields)


@pytest.mark.parametrize(
    ("blocker", "ok", "dead"),
    [
        (lambda r: r.set(DEAD, "a string, not a stream"), False, True),  # the dead-letter write fails
        (lambda r: r.set(TOTAL, "many"), True, False),  # the cluster total's INCR fails
        (lambda r: r.rpush(RESULTS, "a list"), True, False),  # the result write fails
    ],
    ids=["dead-letter-key", "total-key", "results-key"],
)
def test_a_failing_commit_writes_nothing_and_its_retry_stores_one_result(redis_server, blocker, ok, dead):
    r = redis_server.client()
    entry = _pending_entry(r)
    blocker(r)
    with pytest.raises(redis.ResponseError):
        _commit(r, entry, ok, dead)
    assert r.type(RESULTS) == b"list" or r.xlen(RESULTS) == 0, "the result was stored by a failed commit"
    assert r.xpending(JOBS, GROUP)["pending"] == 1, "the failed commit acked the job"
    r.delete(DEAD, TOTAL, RESULTS)  # the operator mends the key; the daemon retries the commit
    assert _commit(r, entry, ok, dead) == 1
    assert _commit(r, entry, ok, dead) == 0  # a retry after a lost reply stores nothing more
    assert r.xlen(RESULTS) == 1
    assert r.xlen(DEAD) == (1 if dead else 0)
    assert int(r.get(TOTAL) or 0) == (1 if ok else 0)
    assert r.xpending(JOBS, GROUP)["pending"] == 0


# -- reply streams expire ---------------------------------------------------------------------------------


def _reply_ttls(r: redis.Redis) -> dict[bytes, int]:
    return {k: r.ttl(k) for k in r.scan_iter(f"{JOBS}:reply:*")}


@pytest.mark.slow
def test_an_interrupted_submit_redis_leaves_only_expiring_streams(tmp_path, origin, redis_server):
    """Ctrl-C deletes the client's reply stream; the jobs it had enqueued are still fetched, and their
    results re-create the stream: with an expiry, never without."""
    r = redis_server.client()
    d = cluster_daemon(tmp_path, "a", redis_server.url, reply_ttl=60)
    try:
        urls = "".join(origin.url(f"/slow?s=1.5&n={i}") + "\n" for i in range(30))
        argv = [sys.executable, "-m", "shmfetch", "submit", "--redis", redis_server.url, "--concurrency", "8", "-"]
        with subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as p:  # fmt: skip
            started_pids.add(p.pid)
            p.stdin.write(urls)
            p.stdin.close()
            wait_for(lambda: r.xlen(JOBS) >= 8, timeout=20, what="the jobs enqueued")
            time.sleep(0.5)
            p.send_signal(signal.SIGINT)
            assert p.wait(20) == 130
        wait_for(lambda: _reply_ttls(r), timeout=30, what="a late result re-creating the reply stream")
        wait_for(lambda: r.xpending(JOBS, GROUP)["pending"] == 0, timeout=30, what="every job answered")
        ttls = _reply_ttls(r)
    finally:
        stop_all(d)
    assert ttls and all(0 < t <= 60 for t in ttls.values()), ttls


def test_an_abandoned_redis_client_leaves_an_expiring_stream(tmp_path, origin, redis_server):
    r = redis_server.client()
    d = cluster_daemon(tmp_path, "a", redis_server.url, reply_ttl=60)
    try:
        c = RedisClient(redis_server.url, timeout=30)
        assert c.fetch(origin.url("/page/1")).ok
        c.redis.close()  # its connection only: the client is dropped without close()
    finally:
        stop_all(d)
    assert 0 < r.ttl(c.reply_to) <= 60


def test_redis_client_answers_a_huge_url_without_enqueuing_it(tmp_path, origin, redis_server):
    r = redis_server.client()
    d = cluster_daemon(tmp_path, "a", redis_server.url)
    try:
        with RedisClient(redis_server.url, timeout=30) as c:
            got = list(c.fetch_many([origin.url("/page/1"), "http://127.0.0.1/" + "a" * 2_000_000]))
    finally:
        stop_all(d)
    assert sorted((x.ok, x.error) for x in got) == [(False, "invalid_url"), (True, None)]
    assert r.xinfo_stream(JOBS)["entries-added"] == 1


# -- results --follow across a Redis restart --------------------------------------------------------------


def _add_results(r: redis.Redis, first: int, n: int) -> None:
    for i in range(first, first + n):
        frame = {"ok": True, "url": f"http://127.0.0.1/page/{i}", "text": f"page {i}", "status": 200}
        flat = streams.result_fields(f"0-{i + 1}", str(i), CONSUMER, frame)
        r.xadd(RESULTS, dict(zip(flat[::2], flat[1::2], strict=True)))


def _lines(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line)


def _take(lines: queue.Queue, n: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    return [json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic()))) for _ in range(n)]


@pytest.mark.slow
def test_results_follow_survives_a_redis_restart(redis_server):
    r = redis_server.client()
    _add_results(r, 0, 10)
    argv = [sys.executable, "-m", "shmfetch", "results", "--redis", redis_server.url, "--follow", "--json"]
    p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started_pids.add(p.pid)
    out: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_lines, args=(p.stdout, out), daemon=True)
    reader.start()
    try:
        got = _take(out, 10, timeout=20)
        _add_results(r, 10, 5)  # may or may not be printed before Redis goes away: none may be lost
        r.close()
        redis_server.restart(down_for=1.5)
        r = redis_server.client()
        _add_results(r, 15, 5)
        got += _take(out, 10, timeout=60)
        time.sleep(1.5)  # a duplicate would show up within a read or two
        assert out.empty(), out.get()
        assert p.poll() is None, p.stderr.read()
    finally:
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    assert [g["id"] for g in got] == [str(i) for i in range(20)]
    assert [g["text"] for g in got] == [f"page {i}" for i in range(20)]
    assert "retrying in" in err and "Redis is back; resuming after entry" in err, err


# -- credentials ------------------------------------------------------------------------------------------

SECRET = "s3cret-pw"


@pytest.mark.slow
@pytest.mark.parametrize("form", ["query", "userinfo", "unix-query"])
def test_a_redis_password_never_shows_in_stats_http_or_the_log(tmp_path, redis_server, form):
    r = redis_server.client()
    r.config_set("requirepass", SECRET)
    url = {
        "query": f"redis://127.0.0.1:{redis_server.port}/0?password={SECRET}",
        "userinfo": f"redis://default:{SECRET}@127.0.0.1:{redis_server.port}/0",
        "unix-query": f"unix://{redis_server.dir / 'redis.sock'}?db=0&password={SECRET}",
    }[form]
    port = free_port()
    cfg = write_config(tmp_path, cluster={"redis": url}, http={"listen": f"127.0.0.1:{port}"})
    d = Daemon(cfg, tmp_path / "shmfetch.sock")
    try:
        wait_for(lambda: daemon_stats(d.socket)["cluster"]["state"] == "up", timeout=20, what="Redis up")
        shown = [
            run_cli("stats", "--socket", d.socket, timeout=20).stdout,
            run_cli("stats", "--json", "--socket", d.socket, timeout=20).stdout,
            urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10).read().decode(),
            # a client's own errors name the URL too
            run_cli("submit", "--redis", url.replace(str(redis_server.port), str(free_port())), "http://x/").stderr,
        ]
    finally:
        stop_all(d)
    shown.append(d.stderr)
    assert "***" in shown[0] and "***" in d.stderr
    for text in shown:
        assert SECRET not in text, text[-3000:]
