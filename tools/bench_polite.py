"""Benchmarks of issue 14: the HTTP cache through the daemon, and the politeness gate's bookkeeping.

Three measurements, each with its peer measured in the same run (numbers go to docs/BENCHMARKS.md):

1. cache hit cost: a private daemon with ``[cache] path``; every page of the loadgen set fetched once
   (misses, stored), then ``-n`` requests that all hit. Master CPU per hit (utime+stime of the master from
   /proc) against the master CPU per request of the uncached run; the workers' served counts must not move.
2. 50 % hits: pages/s of a run where every other request is a hit (the others carry a unique query, so they
   miss and are fetched) against pages/s of the same run on a daemon without the cache.
3. politeness bookkeeping at ``--hosts`` hosts: the master's per-request work in frontier.py and
   politeness.py (``admit`` -> ``pop_ready`` -> ``finished``), in-process, against the same loop with
   a plain queue. The frontier runs with its two callbacks (``fail``, ``pump``) and no dispatcher.

    python tools/bench_polite.py -n 2000 -c 64 --hosts 1000 --json /tmp/polite.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from loadgen import PrivateDaemon, cpu_snapshot, cpu_split, daemon_pids, drive  # noqa: E402

from shmfetch import Client  # noqa: E402
from shmfetch.config import Config, PolitenessConfig  # noqa: E402
from shmfetch.frontier.admission import Frontier  # noqa: E402
from shmfetch.job import Job  # noqa: E402
from shmfetch.testing.origin import OriginProcess  # noqa: E402


def served(socket_path: str) -> int:
    with Client(socket_path, timeout=10) as c:
        return sum(w["served"] for w in c.stats()["workers"])


def measured(socket_path: str, urls: list[str], n: int, conc: int) -> dict[str, Any]:
    """One driven run with the daemon's CPU split, as loadgen reports it."""
    pids = daemon_pids(socket_path)
    before = cpu_snapshot(pids)
    out = asyncio.run(drive(socket_path, urls, n, conc, 2, None, False))
    out["cpu"] = cpu_split(pids, before, cpu_snapshot(pids), n)
    return out


def bench_cache(args: argparse.Namespace) -> dict[str, Any]:
    origin = OriginProcess(args.pages, 1, args.latency_ms, cache_control="max-age=3600")
    tmp = tempfile.mkdtemp(prefix="bench_polite.")
    try:
        pages = origin.urls
        # every other request a miss: a unique query the origin ignores, so it is fetched and stored anew
        mixed = [u if i % 2 else f"{u}?miss={i}" for i, u in enumerate(pages * (args.n // len(pages) + 1))]
        report: dict[str, Any] = {}
        plain = PrivateDaemon(args.workers, args.threads)
        try:
            asyncio.run(drive(plain.socket, pages, len(pages), args.c, 2, None, False))  # warm-up
            report["uncached_all"] = measured(plain.socket, pages, args.n, args.c)
            report["uncached_mixed"] = measured(plain.socket, mixed, args.n, args.c)
        finally:
            plain.close()
        cached = PrivateDaemon(args.workers, args.threads, {"cache": {"path": f"{tmp}/cache.db"}})
        try:
            asyncio.run(drive(cached.socket, pages, len(pages), args.c, 2, None, False))  # fills the cache
            s0 = served(cached.socket)
            report["hits"] = measured(cached.socket, pages, args.n, args.c)
            report["hits"]["worker_results_during_run"] = served(cached.socket) - s0
            report["mixed_50pct"] = measured(cached.socket, mixed, args.n, args.c)
        finally:
            cached.close()
    finally:
        origin.close()
        for p in Path(tmp).glob("*"):
            p.unlink()
        Path(tmp).rmdir()
    report["ratios"] = {
        "hit_master_us": report["hits"]["cpu"]["master_us_per_page"],
        "uncached_master_us": report["uncached_all"]["cpu"]["master_us_per_page"],
        "mixed_50pct_vs_uncached_pages_per_s": round(
            report["mixed_50pct"]["pages_per_s"] / report["uncached_mixed"]["pages_per_s"], 2
        ),
    }
    return report


def no_pump() -> None:
    """The bookkeeping loop takes ready jobs itself: a pump request needs nothing."""


def no_fail(job: Job, code: str, message: str | None = None) -> None:
    raise AssertionError(f"{job.url}: {code}")  # nothing in this loop is refused


class Discard:
    """A sink for jobs that are never answered."""

    closed = False

    def send(self, frame: dict[str, Any]) -> None:
        pass


def bench_gate(hosts: int, n: int, per_host: int) -> dict[str, Any]:
    """Per-request CPU of the frontier's bookkeeping against a plain deque, in one process."""
    cfg = Config(politeness=PolitenessConfig(per_host=per_host))
    urls = [f"http://h{i % hosts}.example:80/p/{i}" for i in range(n)]
    frame = {"status": 200, "retry_after": None, "answered_at": None, "final_url": None, "ok": True}
    frame.update(body_bytes=0, retries=0)
    sink = Discard()

    def frontier_loop() -> float:
        fr = Frontier(cfg, asyncio.new_event_loop(), no_fail, no_pump)
        inflight: collections.deque[Job] = collections.deque()
        t0 = time.process_time()
        for i, url in enumerate(urls):
            fr.admit(Job(sink, i, url))
            while (job := fr.pop_ready()) is not None:
                inflight.append(job)
            if len(inflight) > hosts:  # results come back in dispatch order
                fr.finished(inflight.popleft(), {**frame, "final_url": None})
        while inflight:
            fr.finished(inflight.popleft(), frame)
            while (job := fr.pop_ready()) is not None:
                inflight.append(job)
        return time.process_time() - t0

    def plain_loop() -> float:
        pending: collections.deque[Job] = collections.deque()
        inflight: collections.deque[Job] = collections.deque()
        t0 = time.process_time()
        for i, url in enumerate(urls):
            pending.append(Job(sink, i, url))
            while pending:
                inflight.append(pending.popleft())
            if len(inflight) > hosts:
                inflight.popleft()
        inflight.clear()
        return time.process_time() - t0

    rounds = [(frontier_loop(), plain_loop()) for _ in range(5)]
    with_gate = sorted(r[0] for r in rounds)[2]
    without = sorted(r[1] for r in rounds)[2]
    return {
        "hosts": hosts,
        "requests": n,
        "frontier_us_per_request": round(with_gate / n * 1e6, 2),
        "plain_queue_us_per_request": round(without / n * 1e6, 2),
        "bookkeeping_us_per_request": round((with_gate - without) / n * 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="requests per measured run (default 2000)")
    ap.add_argument("-c", type=int, default=64, help="requests in flight (default 64)")
    ap.add_argument("--pages", type=int, default=200, help="pages in the loadgen set (default 200)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="origin latency (default 0)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--hosts", type=int, default=1000, help="hosts for the bookkeeping bench (default 1000)")
    ap.add_argument("--only", choices=("cache", "gate"), help="run one of the two")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args)}
    if args.only != "cache":
        report["gate"] = bench_gate(args.hosts, 100_000, 8)
        print("politeness bookkeeping:", json.dumps(report["gate"]))
    if args.only != "gate":
        report["cache"] = bench_cache(args)
        c = report["cache"]
        for name in ("uncached_all", "hits", "uncached_mixed", "mixed_50pct"):
            r = c[name]
            print(
                f"{name:15s} {r['pages_per_s']:8.1f} pages/s  master {r['cpu']['master_us_per_page']:7.1f} us/page"
                f"  workers {r['cpu']['workers_us_per_page']:8.1f} us/page"
            )
        print("worker results during the all-hit run:", c["hits"]["worker_results_during_run"])
        print("ratios:", json.dumps(c["ratios"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
