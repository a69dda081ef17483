"""Speed and quality of the ``main`` content mode through the daemon, against a multiprocessing peer.

    python tools/bench_modes.py [--requests 600] [--rounds 3] [--latency-ms 0] [--workers N]

One run, same machine, same URLs, same origin:

* an origin process (aiohttp) serves the shipped article pages (tests/pages) under many URLs, after
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
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shmfetch import AsyncClient  # noqa: E402
from shmfetch.evaluate import load_expected, token_scores  # noqa: E402
from shmfetch.maintext import EXTRACT_OPTIONS  # noqa: E402

PAGES = REPO / "tests" / "pages"


# -- origin -------------------------------------------------------------------------------------------


def _origin(port_q: Any, latency: float) -> None:
    from aiohttp import web

    pages = {p.name: p.read_bytes() for p in PAGES.glob("*.html")}

    async def handle(request: web.Request) -> web.Response:
        if latency:
            await asyncio.sleep(latency)
        body = pages.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/p/{i}/{name}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_q.put(site._server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


# -- daemon -------------------------------------------------------------------------------------------


def start_daemon(tmp: Path, workers: int, threads: int = 16) -> tuple[subprocess.Popen, str]:
    sock = str(tmp / "bench.sock")
    cfg = tmp / "bench.ini"
    cfg.write_text(
        f"[daemon]\nworkers = {workers}\nthreads = {threads}\nsocket = {sock}\npidfile = {tmp / 'bench.pid'}\n"
        "log_level = warning\n[fetch]\ntimeout = 30\n[security]\nallow_networks = 127.0.0.1/32\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "shmfetch", "serve", "-c", str(cfg)], cwd=REPO)
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the daemon did not start")
        time.sleep(0.05)
    return proc, sock


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


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def peak_rss_kib(pid: int) -> list[int]:
    """VmHWM (peak RSS, KiB) of each child of ``pid``: the daemon's workers."""
    out = []
    for child in children(pid):
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out.append(int(line.split()[1]))
    return out


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
    scores = [token_scores(text, expected[url.rsplit("/", 1)[1]])[2] for url, text in texts.items()]
    return sum(scores) / len(scores)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--threads", type=int, default=16, help="the daemon's threads per worker (default 16)")
    args = ap.parse_args()
    load0 = f"{os.getloadavg()[0]:.1f}"
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    origin = ctx.Process(target=_origin, args=(port_q, args.latency_ms / 1000.0), daemon=True)
    origin.start()
    port = port_q.get(timeout=30)
    expected = load_expected(PAGES / "expected.jsonl")
    names = sorted(expected)
    urls = [f"http://127.0.0.1:{port}/p/{i}/{names[i % len(names)]}" for i in range(args.requests)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_modes."))
    daemon, sock = start_daemon(tmp, args.workers, args.threads)
    rates: dict[str, list[float]] = {"daemon": [], "peer": []}
    cpu: dict[str, list[float]] = {"daemon": [], "peer": []}
    f1: dict[str, float] = {}
    try:
        with ctx.Pool(args.workers, initializer=_peer_init) as pool:
            list(pool.imap_unordered(_peer_fetch, urls[: 4 * args.workers]))  # warm-up
            daemon_pids = [daemon.pid, *children(daemon.pid)]
            pool_pids = [p.pid for p in pool._pool]
            for _ in range(args.rounds):
                c0, m0 = cpu_seconds(daemon_pids), time.process_time()
                rate, texts = run_daemon(sock, urls)
                cpu["daemon"].append((cpu_seconds(daemon_pids) - c0 + time.process_time() - m0) / len(urls))
                rates["daemon"].append(rate)
                f1["daemon"] = mean_f1(texts, expected)
                c0, m0 = cpu_seconds(pool_pids), time.process_time()
                rate, texts = run_peer(pool, urls)
                cpu["peer"].append((cpu_seconds(pool_pids) - c0 + time.process_time() - m0) / len(urls))
                rates["peer"].append(rate)
                f1["peer"] = mean_f1(texts, expected)
        worker_rss = peak_rss_kib(daemon.pid)
    finally:
        daemon.send_signal(signal.SIGUSR1)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        origin.terminate()
        origin.join(5)
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
