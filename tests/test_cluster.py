"""Scale-out on Redis Streams (issue 12): real daemons, a real redis-server, the loopback origin."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from shmfetch import names
from shmfetch.cluster import streams
from shmfetch.cluster.client import RedisClient, enqueue

from .helpers import Daemon, daemon_stats, page_text, run_cli, wait_for, write_config

JOBS = streams.DEFAULT_JOBS
RESULTS = streams.DEFAULT_RESULTS
GROUP = streams.DEFAULT_GROUP


def cluster_daemon(tmp: Path, name: str, redis_url: str, wait: bool = True, **cluster: object) -> Daemon:
    d = tmp / name
    d.mkdir(exist_ok=True)
    cfg = write_config(
        d,
        daemon={"workers": cluster.pop("workers", 2), "threads": 4},
        cluster={"redis": redis_url, **cluster},
    )
    return Daemon(cfg, d / "shmfetch.sock", wait=wait)


def stop_all(*daemons: Daemon) -> None:
    for d in daemons:
        if d.proc.poll() is None:
            try:
                d.stop()
            except Exception:
                d.kill()


def results_by_job(r) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for _eid, fields in r.xrange(RESULTS):
        f = streams.parse_result(fields)
        out.setdefault(f["job"], []).append(f)
    return out


def test_jobs_through_one_daemon_exactly_one_result_each(tmp_path, origin, redis_server):
    r = redis_server.client()
    urls = [origin.url(f"/page/{i}") for i in range(40)] + [origin.url("/status/404")]
    ids = list(enqueue(r, JOBS, urls))
    d = cluster_daemon(tmp_path, "a", redis_server.url)
    try:
        wait_for(lambda: r.xlen(RESULTS) >= len(ids), timeout=30, what="all results")
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
