"""Scale-out on Redis Streams: real daemons, a real redis-server, the loopback origin."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from shmfetch import Client
from shmfetch.cluster import streams
from shmfetch.cluster.client import RedisClient, enqueue

from .helpers import Daemon, daemon_stats, page_text, run_cli, wait_for, write_config

JOBS = streams.DEFAULT_JOBS
RESULTS = streams.DEFAULT_RESULTS
GROUP = streams.DEFAULT_GROUP


def cluster_daemon(tmp: Path, name: str, redis_url: str, **cluster: object) -> Daemon:
    d = tmp / name
    d.mkdir(exist_ok=True)
    cfg = write_config(
        d,
        daemon={"workers": cluster.pop("workers", 2), "threads": 4},
        cluster={"redis": redis_url, **cluster},
    )
    return Daemon(cfg, d / "shmfetch.sock")


def consumer_of(d: Daemon) -> str:
    return daemon_stats(d.socket)["cluster"]["consumer"]


def stop_all(*daemons: Daemon) -> None:
    """Stop every daemon (killing one that does not stop), then raise the first failure, if any."""
    failures: list[BaseException] = []
    for d in daemons:
        if d.proc.poll() is None:
            try:
                d.stop()
            except Exception as e:
                failures.append(e)
                d.kill()
    if failures:
        raise failures[0]


def results_by_job(r) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for _eid, fields in r.xrange(RESULTS):
        f = streams.parse_result(fields)
        out.setdefault(f["job"], []).append(f)
    return out


@pytest.mark.slow
def test_jobs_through_one_daemon_exactly_one_result_each(tmp_path, origin, redis_server):
    r = redis_server.client()
    urls = [origin.url(f"/page/{i}") for i in range(40)] + [origin.url("/status/404")]
    ids = list(enqueue(r, JOBS, urls))
    d = cluster_daemon(tmp_path, "a", redis_server.url)
    try:
        wait_for(lambda: r.xlen(RESULTS) >= len(ids), timeout=30, what="all results")
        # A result is in Redis before the daemon has read the COMMIT reply that counts it.
        wait_for(
            lambda: daemon_stats(d.socket)["cluster"]["committed"] >= len(ids), timeout=10, what="counted"
        )
        st = daemon_stats(d.socket)["cluster"]
    finally:
        stop_all(d)
    got = results_by_job(r)
    assert sorted(got) == sorted(ids)
    assert all(len(v) == 1 for v in got.values())
    by_url = {v[0]["url"]: v[0] for v in got.values()}
    for i in range(40):
        res = by_url[origin.url(f"/page/{i}")]
        assert res["ok"] and res["text"] == page_text(i) and res["status"] == 200
    bad = by_url[origin.url("/status/404")]
    assert not bad["ok"] and bad["error"] == "http_status" and bad["status"] == 404
    assert int(r.get(streams.total_key(JOBS))) == 40
    assert r.xpending(JOBS, GROUP)["pending"] == 0
    assert st["state"] == "up" and st["claimed"] == 41 and st["committed"] == 41
    assert st["consumer"].endswith(f":{d.pid}") and st["group"] == GROUP
    assert d.proc.returncode == 0 and d.last_line() == "downloaded 40 URLs"


def _pending_of(r, consumer: str) -> int:
    """Jobs ``consumer`` holds; 0 before any daemon has created the group (its first read does)."""
    try:
        return len(r.xpending_range(JOBS, GROUP, min="-", max="+", count=100000, consumername=consumer))
    except redis.exceptions.ResponseError as e:
        if "NOGROUP" in str(e):
            return 0
        raise


@pytest.mark.slow
def test_three_daemons_one_killed_every_job_one_result(tmp_path, origin, redis_server):
    claim_idle = 2.0
    r = redis_server.client()
    n = 3000
    ids = list(enqueue(r, JOBS, (origin.url(f"/page/{i % 500}") for i in range(n))))
    daemons = [
        cluster_daemon(tmp_path, name, redis_server.url, workers=1, claim_idle=claim_idle) for name in "abc"
    ]
    try:
        wait_for(lambda: r.xlen(RESULTS) >= 600, timeout=60, what="600 results")
        victim = daemons[0]
        consumer = consumer_of(victim)
        victim.kill()  # the master and its workers; Daemon.kill also unlinks what they left
        killed_at = time.monotonic()
        held = _pending_of(r, consumer)
        assert held > 0, "the killed daemon held no job: the test proves nothing"
        wait_for(lambda: _pending_of(r, consumer) == 0, timeout=4 * claim_idle, what="reclaim", step=0.02)
        reclaim_s = time.monotonic() - killed_at
        wait_for(lambda: r.xlen(RESULTS) >= n, timeout=120, what="all results")
        # acknowledged jobs are trimmed from the front of the stream (MINID ~ keeps up to one node of 100)
        wait_for(lambda: r.xlen(JOBS) <= 100, timeout=10, what="the jobs stream trimmed")
        stats = [daemon_stats(d.socket)["cluster"] for d in daemons[1:]]
    finally:
        stop_all(*daemons)
    print(f"killed daemon held {held} job(s); reclaimed in {reclaim_s:.2f}s (claim_idle {claim_idle}s)")
    assert reclaim_s <= 2 * claim_idle
    got = results_by_job(r)
    assert sorted(got) == sorted(ids), "a job was lost or a result has no job"
    dup = {k: len(v) for k, v in got.items() if len(v) != 1}
    assert not dup, f"jobs with more than one result: {dup}"
    oks = sum(v[0]["ok"] for v in got.values())
    assert oks == n
    assert int(r.get(streams.total_key(JOBS))) == oks
    assert r.xpending(JOBS, GROUP)["pending"] == 0
    assert sum(s["reclaimed"] for s in stats) >= held
    for d in daemons[1:]:
        assert d.proc.returncode == 0 and d.last_line().startswith("downloaded ")


@pytest.mark.slow
def test_redis_restart_mid_run_nothing_lost_or_duplicated(tmp_path, origin, redis_server):
    r = redis_server.client()
    n = 1000
    ids = list(enqueue(r, JOBS, (origin.url(f"/page/{i % 300}") for i in range(n))))
    daemons = [cluster_daemon(tmp_path, name, redis_server.url, workers=1, claim_idle=2.0) for name in "ab"]
    try:
        wait_for(lambda: r.xlen(RESULTS) >= 200, timeout=60, what="200 results")
        r.close()
        redis_server.stop()
        # Redis is down: the daemons say so, and their local clients are served as before.
        wait_for(
            lambda: all(daemon_stats(d.socket)["cluster"]["state"] == "down" for d in daemons),
            timeout=20,
            what="both daemons to report Redis down",
        )
        with Client(daemons[0].socket, timeout=30) as c:
            local = c.fetch(origin.url("/page/9"))
        redis_server.start()
        r = redis_server.client()
        wait_for(lambda: r.xlen(RESULTS) >= n, timeout=120, what="all results after the restart")
        wait_for(lambda: r.xpending(JOBS, GROUP)["pending"] == 0, timeout=20, what="an empty PEL")
        stats = [daemon_stats(d.socket)["cluster"] for d in daemons]
    finally:
        stop_all(*daemons)
    got = results_by_job(r)
    assert sorted(got) == sorted(ids)
    assert all(len(v) == 1 for v in got.values()), "a job has two results"
    oks = sum(v[0]["ok"] for v in got.values())
    assert oks == n and int(r.get(streams.total_key(JOBS))) == oks
    assert all(s["state"] == "up" for s in stats)
    assert local.ok and local.text == page_text(9)
    assert any("is down" in d.stderr for d in daemons), "no daemon noticed the outage"


@pytest.mark.slow
def test_slow_owner_yields_one_result(tmp_path, origin, redis_server):
    """A SIGSTOPped daemon's job is reclaimed and answered by another; when the first resumes and finishes
    it, its result is dropped (COMMIT checks ownership), so the job has one result."""
    r = redis_server.client()
    a = cluster_daemon(tmp_path, "a", redis_server.url, workers=1, claim_idle=1.0)
    b = None
    try:
        a_consumer = consumer_of(a)
        (job,) = enqueue(r, JOBS, [origin.url("/slow?s=1.5")])
        wait_for(lambda: _pending_of(r, a_consumer) == 1, timeout=10, what="a holds the job")
        stopped = [a.pid, *a.worker_pids()]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            b = cluster_daemon(tmp_path, "b", redis_server.url, workers=1, claim_idle=1.0)
            wait_for(lambda: r.xlen(RESULTS) >= 1, timeout=20, what="b's result")
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        wait_for(
            lambda: daemon_stats(a.socket)["cluster"]["stale_dropped"] >= 1,
            timeout=20,
            what="a to finish the job and drop its result",
        )
        b_stats = daemon_stats(b.socket)["cluster"]
    finally:
        stop_all(a, *([b] if b else []))
    got = results_by_job(r)
    assert list(got) == [job] and len(got[job]) == 1
    assert got[job][0]["ok"] and got[job][0]["consumer"] == b_stats["consumer"]
    assert b_stats["reclaimed"] == 1
    assert int(r.get(streams.total_key(JOBS))) == 1


def test_malformed_entries_get_an_error_result_and_the_daemon_goes_on(tmp_path, origin, redis_server):
    r = redis_server.client()
    r.set("not-a-stream", "x")
    bad = [
        r.xadd(JOBS, {"foo": "bar"}).decode(),
        r.xadd(JOBS, {"url": ""}).decode(),
        r.xadd(JOBS, {"url": b"\xff\xfe"}).decode(),
        r.xadd(JOBS, {"url": origin.url("/page/1"), "bogus": "1"}).decode(),
        r.xadd(JOBS, {"url": "http://127.0.0.1/" + "a" * 9000}).decode(),
    ]
    odd_reply = r.xadd(JOBS, {"url": origin.url("/page/2"), "reply_to": "not-a-stream"}).decode()
    good = r.xadd(JOBS, {"url": origin.url("/page/3"), "id": "job-3"}).decode()
    d = cluster_daemon(tmp_path, "a", redis_server.url)
    try:
        wait_for(lambda: r.xlen(RESULTS) >= 7, timeout=30, what="7 results")
        st = daemon_stats(d.socket)["cluster"]
    finally:
        stop_all(d)
    got = {k: v[0] for k, v in results_by_job(r).items()}
    assert sorted(got) == sorted([*bad, odd_reply, good])
    for eid in bad[:4]:
        assert not got[eid]["ok"] and got[eid]["error"] == "bad_request", got[eid]
    assert got[bad[4]]["error"] == "invalid_url"
    assert got[odd_reply]["ok"] and got[odd_reply]["text"] == page_text(2)
    assert got[good]["ok"] and got[good]["id"] == "job-3" and got[good]["text"] == page_text(3)
    assert st["malformed"] == 4
    assert r.xpending(JOBS, GROUP)["pending"] == 0


@pytest.mark.slow
def test_too_many_deliveries_go_to_the_dead_letter_stream(tmp_path, origin, redis_server):
    r = redis_server.client()
    r.xgroup_create(JOBS, GROUP, id="0", mkstream=True)
    (job,) = enqueue(r, JOBS, [origin.url("/page/1")])
    (gone,) = enqueue(r, JOBS, [origin.url("/page/2")])
    # A consumer that took both jobs and died three times over (each XCLAIM counts a delivery) ...
    r.xreadgroup(GROUP, "ghost:1", {JOBS: ">"}, count=2)
    for _ in range(2):
        r.xclaim(JOBS, GROUP, "ghost:1", 0, [job])
    r.xdel(JOBS, gone)  # ... and one job was deleted from the stream meanwhile (XAUTOCLAIM's deleted ids)
    d = cluster_daemon(tmp_path, "a", redis_server.url, claim_idle=0.3, max_deliveries=3)
    try:
        wait_for(lambda: r.xlen(RESULTS) >= 1, timeout=20, what="the dead-letter result")
        wait_for(lambda: r.xpending(JOBS, GROUP)["pending"] == 0, timeout=10, what="an empty PEL")
        wait_for(lambda: daemon_stats(d.socket)["cluster"]["dead_lettered"] >= 1, timeout=10, what="counted")
        st = daemon_stats(d.socket)["cluster"]
    finally:
        stop_all(d)
    (res,) = results_by_job(r)[job]
    assert not res["ok"] and res["error"] == "worker_crashed" and "delivered 4 times" in res["message"]
    (dead,) = r.xrange(streams.dead_key(JOBS))
    assert dead[1][b"job"].decode() == job and dead[1][b"deliveries"] == b"4"
    assert st["dead_lettered"] == 1
    assert r.get(streams.total_key(JOBS)) is None


def test_autoclaim_reply_of_redis_6_2_and_7():
    entry = [b"1-0", [b"url", b"http://127.0.0.1/"]]
    # Redis 7: [cursor, entries, deleted ids]
    assert streams.autoclaim_reply([b"0-0", [entry], [b"2-0"]]) == (
        b"0-0", [(b"1-0", {b"url": b"http://127.0.0.1/"})], [b"2-0"],
    )  # fmt: skip
    # Redis 6.2: [cursor, entries], a deleted entry shows as [id, nil]
    assert streams.autoclaim_reply([b"3-0", [entry, [b"2-0", None]]]) == (
        b"3-0", [(b"1-0", {b"url": b"http://127.0.0.1/"})], [b"2-0"],
    )  # fmt: skip


@pytest.mark.slow
def test_cli_enqueue_results_submit_and_stats(tmp_path, origin, redis_server):
    urls = [origin.url(f"/page/{i}") for i in range(5)] + [origin.url("/status/500")]
    d = cluster_daemon(tmp_path, "a", redis_server.url)
    try:
        local = run_cli("submit", "--socket", d.socket, *urls)
        remote = run_cli("submit", "--redis", redis_server.url, *urls)
        local_j = run_cli("submit", "--json", "--socket", d.socket, *urls)
        remote_j = run_cli("submit", "--json", "--redis", redis_server.url, *urls)
        enq = run_cli("enqueue", "--redis", redis_server.url, "-", stdin="\n".join(urls[:3]) + "\n")
        r = redis_server.client()
        wait_for(lambda: r.xlen(RESULTS) >= 3, timeout=20, what="the enqueued results")
        res = run_cli("results", "--redis", redis_server.url, "--json")
        stats = run_cli("stats", "--socket", d.socket)
        stats_j = json.loads(run_cli("stats", "--json", "--socket", d.socket).stdout)["cluster"]
    finally:
        stop_all(d)

    def blocks(out: str) -> list[str]:
        return sorted(out.split("==> "))

    assert remote.returncode == local.returncode == 1
    assert blocks(remote.stdout) == blocks(local.stdout)
    assert sorted(remote.stderr.splitlines()) == sorted(local.stderr.splitlines())

    # Values that differ from one fetch of a page to the next: who fetched it, how long it took, the
    # response's Date and when its headers arrived.
    PER_FETCH = ("worker", "elapsed_ms", "date", "answered_at")  # noqa: N806

    def rows(out: str) -> list[dict]:
        return sorted(
            ({k: v for k, v in json.loads(x).items() if k not in PER_FETCH} for x in out.splitlines()),
            key=lambda x: x["url"],
        )

    assert rows(remote_j.stdout) == rows(local_j.stdout)
    assert [list(json.loads(x)) for x in remote_j.stdout.splitlines()] == [
        list(json.loads(x)) for x in local_j.stdout.splitlines()
    ]
    ids = enq.stdout.split()
    assert enq.returncode == 0 and len(ids) == 3
    printed = [json.loads(x) for x in res.stdout.splitlines()]
    assert all(p["ok"] for p in printed)
    assert {p["job"]: p["text"] for p in printed} == {ids[i]: page_text(i) for i in range(3)}
    assert "cluster:" in stats.stdout and "lag" in stats.stdout
    for key in ("lag", "pending", "consumers", "claimed", "reclaimed", "state", "cluster_total"):
        assert key in stats_j
    assert stats_j["claimed"] == 15  # 6 + 6 through submit --redis, 3 enqueued


@pytest.mark.slow
def test_redis_client_fetch_and_fetch_many(tmp_path, origin, redis_server):
    d = cluster_daemon(tmp_path, "a", redis_server.url)
    try:
        with RedisClient(redis_server.url, timeout=30) as c:
            one = c.fetch(origin.url("/page/7"))
            many = list(c.fetch_many((origin.url(f"/page/{i}") for i in range(50)), concurrency=8))
            reply_to = c.reply_to
        r = redis_server.client()
        assert not r.exists(reply_to), "the private reply stream outlived the client"
    finally:
        stop_all(d)
    assert one.ok and one.text == page_text(7)
    assert sorted(x.text for x in many) == sorted(page_text(i) for i in range(50))
    assert r.xlen(RESULTS) == 0  # replies went to the private stream only


@pytest.mark.slow
def test_jobs_carry_the_per_request_options(tmp_path, origin, redis_server):
    # A job's fields may be the local protocol's request options; the daemon checks them as it checks a
    # socket client's (a bad one is a bad_request naming it) and the worker applies them.
    r = redis_server.client()
    bad = r.xadd(JOBS, {"url": origin.url("/page/1"), "mode": "poetry"}).decode()
    d = cluster_daemon(tmp_path, "a", redis_server.url)
    try:
        with RedisClient(redis_server.url, timeout=30) as c:
            plain = c.fetch(origin.url("/page/7"))
            linked = c.fetch(origin.url("/page/7"), links=True)
            capped = c.fetch(origin.url("/page/7"), max_bytes=10)
        wait_for(lambda: r.xlen(RESULTS) >= 1, timeout=30, what="the bad job's result")
    finally:
        stop_all(d)
    assert plain.ok and plain.links is None
    assert linked.ok and linked.text == plain.text and isinstance(linked.links, list)
    assert not capped.ok and capped.error == "too_large"
    got = results_by_job(r)[bad][0]
    assert got["error"] == "bad_request" and "mode" in got["message"], got


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport/0", "http://127.0.0.1:6379", "redis://"])
def test_malformed_redis_url_exits_2(tmp_path, url):
    cfg = write_config(tmp_path, cluster={"redis": url})
    p = run_cli("serve", "-c", str(cfg), timeout=30)
    assert p.returncode == 2
    assert "[cluster] redis" in p.stderr


@pytest.mark.slow
def test_departed_consumers_are_removed_and_only_those(tmp_path, origin, redis_server):
    """Every daemon that ever ran used to stay in the group as a host:pid consumer. A consumer with nothing
    pending and idle for 5 x claim_idle is removed; one that still holds an entry never is (the check and
    the removal are one atomic script, because XGROUP DELCONSUMER drops pending entries with it)."""
    r = redis_server.client()
    r.xgroup_create(JOBS, GROUP, id="0", mkstream=True)
    r.xgroup_createconsumer(JOBS, GROUP, "gone:1")
    forget = r.register_script(streams.FORGET)
    r.xadd(JOBS, {"url": origin.url("/page/1")})
    r.xreadgroup(GROUP, "holder:2", {JOBS: ">"}, count=1)  # holder:2 now has one pending entry
    assert forget(keys=[JOBS], args=[GROUP, "holder:2"]) == 0
    assert {c["name"].decode() for c in r.xinfo_consumers(JOBS, GROUP)} == {"gone:1", "holder:2"}

    d = cluster_daemon(tmp_path, "a", redis_server.url, claim_idle=1)
    try:
        wait_for(lambda: r.xlen(RESULTS) >= 1, timeout=30, what="holder:2's job reclaimed and answered")
        wait_for(
            lambda: {c["name"].decode() for c in r.xinfo_consumers(JOBS, GROUP)} == {consumer_of(d)},
            timeout=30,
            what="the two departed consumers removed",
        )
        wait_for(lambda: daemon_stats(d.socket)["cluster"]["forgotten"] >= 2, timeout=10, what="counted")
        st = daemon_stats(d.socket)["cluster"]
    finally:
        stop_all(d)
    assert st["forgotten"] == 2 and st["reclaimed"] == 1
    assert r.xpending(JOBS, GROUP)["pending"] == 0
