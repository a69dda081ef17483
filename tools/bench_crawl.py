"""A crawl against ``submit`` of the same URLs, and what a crawl costs the master. One command, on an idle
machine:

    python tools/bench_crawl.py                       # 2 000 pages of one host, per_host 8, 3 rounds
    python tools/bench_crawl.py --pages 2000 --per-host 8 --rounds 5 --json /tmp/crawl.json

What it runs:

1. an origin process (shmfetch.testing.origin) serving ``/tree/45/I``: pages of ~8 KB of text with 45 links
   to their children and two navigation links (home, parent), so a crawl meets duplicates as on real sites;
2. a private daemon (``--workers`` x ``--threads``, ``[politeness] per_host = --per-host``);
3. per round, a crawl of the tree from its root (scope host, depth 2, ``max_pages = --pages``), then
   ``fetch_many`` of exactly the URLs that crawl fetched, with ``links=true`` and ``--concurrency`` 64, so
   the workers do the same work in both and the per-host limit is the same. For each: pages/s, and the
   master's CPU time (utime + stime from /proc) per page. The crawl's extra master CPU per page is the
   difference: reading the links, scope, normalizing, the seen set and the queue.
4. in this process, the seen set of 100 000 URLs (``--seen``) through the crawl's own code (the digest of
   the normalized URL, in a ``SeenSet``): bytes per URL by tracemalloc, the growth of VmRSS, and the time to
   normalize and digest one URL.

Prints one JSON report (medians over the rounds): ``crawl_pages_per_s``, ``submit_pages_per_s``, their
``ratio`` (target >= 0.9), ``crawl_master_us_per_page``, ``submit_master_us_per_page``, their difference
``crawl_overhead_us_per_page`` (target <= 100), and ``seen_set`` (target <= 100 bytes per URL).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from loadgen import PrivateDaemon  # noqa: E402

from shmfetch import Client, CrawlSummary  # noqa: E402
from shmfetch.crawl.rules import SeenSet, digest, normalized  # noqa: E402
from shmfetch.testing.origin import OriginProcess  # noqa: E402

FANOUT = 45
TICK = os.sysconf("SC_CLK_TCK")


def master_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def vmrss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_crawl(daemon: PrivateDaemon, root: str, pages: int) -> tuple[dict[str, float], list[str]]:
    """One crawl: its pages/s, master CPU per page, and the URLs it fetched."""
    urls: list[str] = []
    cpu0, t0 = master_cpu_s(daemon.pid), time.perf_counter()
    summary = None
    with Client(daemon.socket, timeout=600) as c:
        for got in c.crawl([root], depth=2, max_pages=pages, scope="host"):
            if isinstance(got, CrawlSummary):
                summary = got
            else:
                urls.append(got.url)
    wall, cpu = time.perf_counter() - t0, master_cpu_s(daemon.pid) - cpu0
    assert summary is not None and summary.ok == len(urls) == pages, (summary, len(urls))
    return {"pages_per_s": pages / wall, "master_us_per_page": cpu / pages * 1e6}, urls


def run_submit(daemon: PrivateDaemon, urls: list[str], concurrency: int) -> dict[str, float]:
    cpu0, t0 = master_cpu_s(daemon.pid), time.perf_counter()
    with Client(daemon.socket, timeout=600) as c:
        ok = sum(r.ok for r in c.fetch_many(urls, concurrency=concurrency, links=True))
    wall, cpu = time.perf_counter() - t0, master_cpu_s(daemon.pid) - cpu0
    assert ok == len(urls), ok
    return {"pages_per_s": len(urls) / wall, "master_us_per_page": cpu / len(urls) * 1e6}


def seen_set_cost(n: int) -> dict[str, float]:
    """The crawl's seen set for ``n`` URLs (as crawl.Crawl keeps it), measured in this process."""
    urls = [
        f"http://www.example.com/section-{i % 97}/article-{i}.html?b={i % 7}&a={i % 13}" for i in range(n)
    ]
    t0 = time.perf_counter()
    timed = {digest(normalized(u)) for u in urls}  # the time, without tracemalloc's cost per allocation
    per_url_us = (time.perf_counter() - t0) / n * 1e6
    del timed
    digests = [digest(normalized(u)) for u in urls]  # made first: only the set is measured below
    rss0 = vmrss_kib()
    seen_rss = SeenSet()  # VmRSS without tracemalloc, whose own records cost memory
    for d in digests:
        seen_rss.add(d)
    rss_growth = vmrss_kib() - rss0
    del seen_rss
    tracemalloc.start()
    seen = SeenSet()
    for d in digests:
        seen.add(d)
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "urls": n,
        "entries": len(seen),
        "bytes_per_url_traced": traced / n,
        "rss_growth_kib": rss_growth,
        "rss_bytes_per_url": rss_growth * 1024 / n,
        "digest_and_normalize_us_per_url": per_url_us,
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    extra = {"politeness": {"per_host": args.per_host}, "crawl": {"max_pages_limit": max(args.pages, 1000)}}
    with OriginProcess(pages=1) as origin:
        daemon = PrivateDaemon(args.workers, args.threads, extra)
        try:
            root = origin.url(f"/tree/{FANOUT}/0")
            for _ in range(args.rounds):
                crawl, urls = run_crawl(daemon, root, args.pages)
                submit = run_submit(daemon, urls, args.concurrency)
                rounds.append({"crawl": crawl, "submit": submit})
                print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
        finally:
            daemon.close()

    def median(kind: str, key: str) -> float:
        return round(statistics.median(r[kind][key] for r in rounds), 1)

    report = {
        "pages": args.pages, "per_host": args.per_host, "workers": args.workers, "threads": args.threads,
        "rounds": args.rounds,
        "crawl_pages_per_s": median("crawl", "pages_per_s"),
        "submit_pages_per_s": median("submit", "pages_per_s"),
        "crawl_master_us_per_page": median("crawl", "master_us_per_page"),
        "submit_master_us_per_page": median("submit", "master_us_per_page"),
        "seen_set": seen_set_cost(args.seen),
    }  # fmt: skip
    report["ratio"] = round(report["crawl_pages_per_s"] / report["submit_pages_per_s"], 3)
    report["crawl_overhead_us_per_page"] = round(
        report["crawl_master_us_per_page"] - report["submit_master_us_per_page"], 1
    )
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=2000, help="pages per crawl (default 2000)")
    ap.add_argument("--per-host", type=int, default=8, help="[politeness] per_host for both (default 8)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=64, help="submit's requests in flight (default 64)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seen", type=int, default=100_000, help="URLs in the seen-set measure (default 100000)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    report = bench(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
