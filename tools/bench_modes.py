"""Speed and quality of the ``main`` content mode through the daemon, against a multiprocessing peer.

    python tools/bench_modes.py [--requests 600] [--rounds 3] [--latency-ms 0] [--workers N]
    python tools/bench_modes.py --extraction-only    # the ceiling on the daemon's lead, one process

One run, same machine, same URLs, same origin:

* an origin process (shmfetch/testing/origin.py) serves the shipped article pages (tests/pages) under many URLs, after
  ``--latency-ms`` of simulated network latency per response;
* **daemon**: ``shmfetch serve`` (N workers, ``--threads`` threads each, default 16), driven by ``AsyncClient.fetch_many(urls,
  mode="main")`` at concurrency 64: download, parse once, trafilatura on the tree, result over shared
  memory and the socket;
* **peer**: ``multiprocessing.Pool(N)`` mapping ``requests.Session.get(url)`` +
  ``trafilatura.extract(r.text, fast=True, ...)`` with the same trafilatura options (maintext.EXTRACT_OPTIONS).

Runs alternate (daemon, peer, daemon, peer, ...) so that drift on a shared box hits both. Reported: the
median pages/s of each, the median of the per-round ratios, the CPU time per page of each (daemon: master
+ workers + this client; peer: the pool's processes + this parent; utime+stime from /proc), which a busy box disturbs
far less than wall-clock rates, and the F1 of each against tests/pages/expected.jsonl
(shmfetch.evaluate.token_scores, mean over the pages). N defaults to the number of cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import statistics
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shmfetch import AsyncClient  # noqa: E402
from shmfetch.extract.evaluate import load_expected, token_scores  # noqa: E402
from shmfetch.extract.maintext import EXTRACT_OPTIONS  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
from loadgen import PrivateDaemon, cpu_seconds, daemon_pids, proc_mem  # noqa: E402

from shmfetch.testing.origin import OriginProcess  # noqa: E402

PAGES = REPO / "tests" / "pages"


# -- origin -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving_origin(latency: float) -> Iterator[int]:
    """The harness's origin in its own process, serving tests/pages under /pages/, for the ``with`` block;
    yields its port on 127.0.0.1."""
    with OriginProcess(pages=0, latency_ms=latency * 1000, pages_dir=PAGES) as origin:
        yield origin.port


def page_url(port: int, i: int, name: str) -> str:
    """A distinct URL (``?copy=i``) for one of the shipped pages."""
    return f"http://127.0.0.1:{port}/pages/{name}?copy={i}"


def page_name(url: str) -> str:
    return urllib.parse.urlsplit(url).path.rsplit("/", 1)[1]


# -- daemon -------------------------------------------------------------------------------------------


def run_daemon(sock: str, urls: list[str]) -> tuple[float, dict[str, str]]:
    async def go() -> tuple[float, dict[str, str]]:
        async with await AsyncClient.connect(sock) as c:
            async for _ in c.fetch_many(
                urls[:32], concurrency=32, mode="main"
            ):  # warm-up: trafilatura import
                pass
            texts: dict[str, str] = {}
            t0 = time.perf_counter()
            async for r in c.fetch_many(urls, concurrency=64, mode="main"):
                if not r.ok:
                    raise SystemExit(f"daemon: {r.url}: {r.error} {r.message}")
                texts[r.url] = r.text
            return len(urls) / (time.perf_counter() - t0), texts

    return asyncio.run(go())


def _cpu(pids: list[int]) -> float:
    """utime + stime of ``pids`` together, in seconds (loadgen.cpu_seconds of each)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


# -- peer ---------------------------------------------------------------------------------------------

_session = None


def _peer_init() -> None:
    import requests
    import trafilatura  # noqa: F401  (imported before the clock starts, as the daemon's warm-up does)

    global _session
    _session = requests.Session()
    _session.trust_env = False


def _peer_fetch(url: str) -> tuple[str, str]:
    import trafilatura

    r = _session.get(url, timeout=30)
    r.raise_for_status()
    return url, trafilatura.extract(r.text, url=url, **EXTRACT_OPTIONS) or ""


def run_peer(pool: Any, urls: list[str]) -> tuple[float, dict[str, str]]:
    t0 = time.perf_counter()
    texts = dict(pool.imap_unordered(_peer_fetch, urls, 4))
    return len(urls) / (time.perf_counter() - t0), texts


# -- scoring ------------------------------------------------------------------------------------------


def mean_f1(texts: dict[str, str], expected: dict[str, str]) -> float:
    scores = [token_scores(text, expected[page_name(url)])[2] for url, text in texts.items()]
    return sum(scores) / len(scores)


def extraction_ceiling(rounds: int = 7, passes: int = 10) -> None:
    """In one process, alternated on the shipped pages: the CPU per page of one pool worker's whole job (the
    peer: requests + ``trafilatura.extract(html)``) and of the daemon's extraction alone (parse once +
    trafilatura on the tree). Their ratio bounds the daemon's lead: it holds even if fetching, the rings,
    the master and the client cost the daemon nothing."""
    import requests
    import trafilatura

    from shmfetch.extract import maintext
    from shmfetch.extract.html import parse_html

    with serving_origin(0.0) as port:
        names = sorted(p.name for p in PAGES.glob("*.html"))
        urls = [page_url(port, 0, n) for n in names]
        pages = [(PAGES / n).read_bytes() for n in names]
        session = requests.Session()
        session.trust_env = False
        maintext.main_content(parse_html(pages[0]), None, "main")  # imports and settings, before the clock

        def peer() -> None:
            for u in urls:
                trafilatura.extract(session.get(u, timeout=30).text, url=u, **EXTRACT_OPTIONS)

        def daemon() -> None:
            for u, p in zip(urls, pages, strict=True):
                maintext.main_content(parse_html(p), u, "main")

        ms: dict[str, list[float]] = {"peer": [], "daemon": []}
        for _ in range(rounds):
            for name, f in (("peer", peer), ("daemon", daemon)):
                t0 = time.process_time()
                for _ in range(passes):
                    f()
                ms[name].append((time.process_time() - t0) / passes / len(pages) * 1e3)
    p, d = statistics.median(ms["peer"]), statistics.median(ms["daemon"])
    print(f"CPU per page in one process, median of {rounds} alternating rounds:")
    print(f"  peer's whole job: requests + trafilatura.extract(html, fast=True)  {p:.2f} ms")
    print(f"  daemon's extraction alone: parse_html + main_content on that tree  {d:.2f} ms")
    print(f"  ceiling on daemon pages/s / peer pages/s, with everything else free: {p / d:.2f} x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--threads", type=int, default=16, help="the daemon's threads per worker (default 16)")
    ap.add_argument(
        "--extraction-only",
        action="store_true",
        help="only the ceiling on the daemon's lead (one process: each side's CPU per page), and exit",
    )
    args = ap.parse_args()
    if args.extraction_only:
        extraction_ceiling()
        return 0
    load0 = f"{os.getloadavg()[0]:.1f}"
    expected = load_expected(PAGES / "expected.jsonl")
    names = sorted(expected)
    rates: dict[str, list[float]] = {"daemon": [], "peer": []}
    cpu: dict[str, list[float]] = {"daemon": [], "peer": []}
    f1: dict[str, float] = {}
    with serving_origin(args.latency_ms / 1000.0) as port:
        urls = [page_url(port, i, names[i % len(names)]) for i in range(args.requests)]
        # loadgen's private daemon: one host's URLs, so it lifts [politeness] per_host (default 8), which
        # would cap the daemon's 64 requests in flight at 8 fetches.
        daemon = PrivateDaemon(args.workers, args.threads, {"fetch": {"timeout": 30}})
        sock = daemon.socket
        try:
            with mp.get_context("spawn").Pool(args.workers, initializer=_peer_init) as pool:
                list(pool.imap_unordered(_peer_fetch, urls[: 4 * args.workers]))  # warm-up
                pids = daemon_pids(sock)
                workers = pids["workers"]
                d_pids = [pids["master"], *workers]
                pool_pids = [p.pid for p in pool._pool]
                for _ in range(args.rounds):
                    c0, m0 = _cpu(d_pids), time.process_time()
                    rate, texts = run_daemon(sock, urls)
                    cpu["daemon"].append((_cpu(d_pids) - c0 + time.process_time() - m0) / len(urls))
                    rates["daemon"].append(rate)
                    f1["daemon"] = mean_f1(texts, expected)
                    c0, m0 = _cpu(pool_pids), time.process_time()
                    rate, texts = run_peer(pool, urls)
                    cpu["peer"].append((_cpu(pool_pids) - c0 + time.process_time() - m0) / len(urls))
                    rates["peer"].append(rate)
                    f1["peer"] = mean_f1(texts, expected)
            worker_rss = [proc_mem(pid).get("VmHWM", 0) for pid in workers]
        finally:
            daemon.close()
    d, p = statistics.median(rates["daemon"]), statistics.median(rates["peer"])
    ratios = [a / b for a, b in zip(rates["daemon"], rates["peer"], strict=True)]
    dc, pc = (statistics.median(cpu[k]) * 1e3 for k in ("daemon", "peer"))
    print(
        f"requests={args.requests} rounds={args.rounds} latency_ms={args.latency_ms} workers={args.workers} threads={args.threads}"
    )
    print(f"load average before/after: {load0} / {os.getloadavg()[0]:.1f}")
    for name, rate, c in (("daemon main", d, dc), ("mp.Pool peer", p, pc)):
        key = "daemon" if name.startswith("daemon") else "peer"
        runs = [round(x, 1) for x in rates[key]]
        print(f"{name:13s} {rate:7.1f} pages/s {c:6.2f} CPU ms/page  F1={f1[key]:.4f}  runs={runs}")
    print(f"daemon workers' peak RSS: {', '.join(f'{k / 1024:.1f} MiB' for k in worker_rss)}")
    print(
        f"per-round ratios daemon/peer: {[round(r, 2) for r in ratios]}, median {statistics.median(ratios):.2f}x"
    )
    print(f"ratio of medians {d / p:.2f}x; CPU per page peer/daemon {pc / dc:.2f}x")
    print(f"F1 difference daemon - peer = {f1['daemon'] - f1['peer']:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
