"""Load generator: drive a running shmfetch daemon through its client API, and compare it with peers.

Origins (loopback only):

* default: its own origin, shmfetch/testing/origin.py in a separate process (a seeded set of ``--pages``
  realistic pages of 10-300 KB, shmfetch/testing/pageset.py; ``--latency-ms`` injected per response);
* ``--urls FILE``: any list of URLs, one a line (e.g. the same page set served by nginx:
  tools/nginx_origin.sh writes it with ``--write-site`` and starts nginx around one command).

The daemon is the one on ``--socket`` / ``-C config`` (default: config.ini's socket), or with ``--spawn`` a
private one this tool starts with a temporary config (``--workers``, ``--threads``) and stops at the end.
Requests go over ``--connections`` AsyncClient connections (one asyncio loop), at most ``-c`` in flight.

Report: pages/s, text MB/s, p50/p95/p99 latency as the client sees it, errors by code, requests per worker
(the ``worker`` field: shows the round robin), and the daemon's CPU time per page for the master and each
worker (utime+stime from /proc/<pid>/stat, before and after; the pids come from the ``stats`` op).

``--compare`` runs, on the same URLs in the same run, ``multiprocessing.Pool(workers)``, a
``ThreadPoolExecutor(c)``, asyncio+aiohttp at concurrency ``c`` (all with the project's extractor
``shmfetch.extract.html_to_text`` on the whole body), and the ideal floor (one process fetching and
extracting in a loop with a requests Session, times the core count), and prints daemon ÷ peer ratios.
``--repeat R`` repeats the whole set R times and reports medians (ratios are taken within each repetition).

    python tools/loadgen.py --spawn -n 2000 -c 64 --compare --json out.json
    python tools/loadgen.py -C config.ini -n 10000 -c 128 --latency-ms 100
    python tools/loadgen.py --write-site /tmp/site --pages 200     # static copy of the page set, for nginx
    python tools/loadgen.py --spawn --overhead                      # P5: per-request overhead, idle CPU, RSS
    python tools/loadgen.py --spawn --front-compare -c 64           # the HTTP API against the Unix socket
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from shmfetch import AsyncClient, Client, Result  # noqa: E402
from shmfetch.config import DaemonConfig, FetchConfig  # noqa: E402
from shmfetch.extract.html import html_to_text  # noqa: E402  (the daemon's extractor: peers must use it too)
from shmfetch.testing.daemon import Daemon, write_config  # noqa: E402
from shmfetch.testing.net import free_port  # noqa: E402
from shmfetch.testing.origin import OriginProcess  # noqa: E402
from shmfetch.testing.pageset import SMALL_PAGE, SMALL_PATH, make_page, page_path  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


# -- small helpers --------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; 0 for an empty list."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100.0 * len(s) + 0.5) - 1))]


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5), after "pid (comm)"


def proc_mem(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def daemon_pids(socket_path: str) -> dict[str, Any]:
    with Client(socket_path, timeout=10) as c:
        st = c.stats()
    return {"master": st["pid"], "workers": [w["pid"] for w in st["workers"] if w["pid"]]}


def cpu_snapshot(pids: dict[str, Any]) -> dict[int, float | None]:
    return {pid: cpu_seconds(pid) for pid in [pids["master"], *pids["workers"]]}


def cpu_split(pids: dict[str, Any], before: dict, after: dict, pages: int) -> dict[str, Any]:
    def delta(pid: int) -> float:
        a, b = after.get(pid), before.get(pid)
        return 0.0 if a is None or b is None else a - b

    master = delta(pids["master"])
    workers = [delta(p) for p in pids["workers"]]
    per = 1e6 / max(1, pages)
    return {
        "master_cpu_s": round(master, 3),
        "workers_cpu_s": [round(w, 3) for w in workers],
        "master_us_per_page": round(master * per, 1),
        "workers_us_per_page": round(sum(workers) * per, 1),
        "total_us_per_page": round((master + sum(workers)) * per, 1),
    }


def summarize(name: str, lat: list[float], wall: float, n_ok: int, text_bytes: int, errors: Counter) -> dict:
    n = len(lat)
    return {
        "name": name,
        "requests": n,
        "ok": n_ok,
        "seconds": round(wall, 3),
        "pages_per_s": round(n / wall, 1) if wall else 0.0,
        "text_mb_per_s": round(text_bytes / wall / 1e6, 2) if wall else 0.0,
        "p50_ms": round(pct(lat, 50) * 1000, 2),
        "p95_ms": round(pct(lat, 95) * 1000, 2),
        "p99_ms": round(pct(lat, 99) * 1000, 2),
        "errors": dict(errors),
    }


_utf8_len: dict[tuple[str, int], int] = {}


def utf8_len(url: str, text: str) -> int:
    """UTF-8 size of a page's text, encoded once per page: encoding 40 KB of non-ASCII text costs ~250 us
    here, which would be measurement overhead competing with the daemon (and the peers) for the CPU."""
    key = (url, len(text))
    n = _utf8_len.get(key)
    if n is None:
        n = _utf8_len[key] = len(text.encode("utf-8"))
    return n


class _NoBar:
    """What ``_bar`` gives with ``--no-progress``: tqdm (the bench extra) is then not needed at all."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm  # the bench extra; main() checked it is there before starting anything

    return tqdm(total=total, desc=desc, unit="req", mininterval=0.5, leave=False)


def check_imports(args: argparse.Namespace) -> str | None:
    """What is missing for this run, as a message, or None. Checked before any origin or daemon starts."""
    if args.no_progress:
        return None
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return (
            "loadgen: tqdm is not installed (the progress bar); install the bench extra with "
            "pip install '.[bench]', or pass --no-progress"
        )
    return None


# -- the daemon ---------------------------------------------------------------------------------------


class HttpFront:
    """The daemon's HTTP API (``[http] listen``) behind the AsyncClient surface loadgen uses."""

    def __init__(self, base: str):
        import aiohttp

        from shmfetch.config import HttpConfig, http_token

        self.base = base.rstrip("/")
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.headers = {"Accept": "application/json"}
        # The daemon's rule: $SHMFETCH_HTTP_TOKEN (--http-token-file sets it from a file)
        if (token := http_token(HttpConfig())) is not None:
            self.headers["Authorization"] = f"Bearer {token}"

    async def fetch(self, url: str) -> Result:
        async with self.session.get(f"{self.base}/fetch", params={"url": url}, headers=self.headers) as r:
            return Result.from_frame(await r.json(content_type=None))

    async def close(self) -> None:
        await self.session.close()


async def drive(
    socket_path: str,
    urls: list[str],
    n: int,
    conc: int,
    nconn: int,
    duration: float | None,
    progress: bool,
    http: str | None = None,
) -> dict[str, Any]:
    if http:  # one keep-alive connection per request in flight, as an HTTP client pool does
        clients: list[Any] = [HttpFront(f"http://{http}")]
        nconn = 1
    else:
        clients = [await AsyncClient.connect(socket_path) for _ in range(nconn)]
    lat: list[float] = []
    errors: Counter[str] = Counter()
    per_worker: Counter[str] = Counter()
    state = {"next": 0, "ok": 0, "text": 0}
    nurls = len(urls)
    deadline = None if duration is None else time.perf_counter() + duration
    bar = _bar(n, "daemon", progress)
    clock = time.perf_counter

    async def one(client: AsyncClient) -> None:
        while state["next"] < n and (deadline is None or clock() < deadline):
            i = state["next"]
            state["next"] = i + 1
            t0 = clock()
            url = urls[i % nurls]
            r = await client.fetch(url)
            lat.append(clock() - t0)
            per_worker[str(r.worker)] += 1
            if r.ok:
                state["ok"] += 1
                state["text"] += utf8_len(url, r.text)
            else:
                errors[r.error or "unknown"] += 1
            bar.update(1)

    t0 = clock()
    try:
        await asyncio.gather(*(one(clients[j % nconn]) for j in range(conc)))
    finally:
        wall = clock() - t0
        bar.close()
        for c in clients:
            await c.close()
    out = summarize("daemon", lat, wall, state["ok"], state["text"], errors)
    out["per_worker"] = dict(sorted(per_worker.items()))
    return out


def run_daemon(args: argparse.Namespace, socket_path: str, urls: list[str], n: int) -> dict[str, Any]:
    pids = daemon_pids(socket_path)
    before = cpu_snapshot(pids)
    mine0 = time.process_time()
    res = asyncio.run(
        drive(socket_path, urls, n, args.c, args.connections, args.duration, not args.no_progress, args.http)
    )
    if args.http:
        res["name"] = f"daemon via HTTP API ({args.http})"
    after = cpu_snapshot(pids)
    res["cpu"] = cpu_split(pids, before, after, res["requests"])
    res["cpu_us_per_page"] = res["cpu"]["total_us_per_page"]  # master + workers (not this client)
    res["cpu"]["loadgen_us_per_page"] = round(
        (time.process_time() - mine0) * 1e6 / max(1, res["requests"]), 1
    )
    res["worker_mem_kib"] = [proc_mem(p) for p in pids["workers"]]
    res["master_mem_kib"] = proc_mem(pids["master"])
    return res


# -- peers: the same work with other designs, and the naive ten lines a user would write instead -------


def naive_text(body: bytes) -> str:
    """The naive peers' extractor: lxml ``text_content()`` after dropping script and style."""
    import lxml.html
    from lxml import etree

    root = lxml.html.fromstring(body)
    etree.strip_elements(root, "script", "style", with_tail=False)
    return root.text_content()


def html_text_text(body: bytes) -> str:
    """The equal-quality reference: the html_text library (it takes str)."""
    import html_text

    return html_text.extract_text(body.decode("utf-8", "replace"))


# Peer name -> extractor: "same code" is the daemon's own (whole body, shmfetch.extract.html_to_text).
EXTRACTORS: dict[str, Callable[[bytes], str]] = {
    "same code": html_to_text,
    "naive lxml": naive_text,
    "html_text": html_text_text,
}

_session = None
_extract: Callable[[bytes], str] = html_to_text


def _peer_init(extractor: str = "same code") -> None:
    import requests

    global _session, _extract
    _session = requests.Session()
    _session.trust_env = False
    _extract = EXTRACTORS[extractor]


def _peer_fetch(url: str) -> tuple[float, bool, int]:
    """Fetch and extract one URL in this process's Session; returns (seconds, ok, text bytes)."""
    t0 = time.perf_counter()
    try:
        r = _session.get(url, timeout=30)
        text = _extract(r.content)
        ok = 200 <= r.status_code < 300
        return time.perf_counter() - t0, ok, utf8_len(url, text)
    except Exception:
        return time.perf_counter() - t0, False, 0


def peer_pool(
    urls: list[str], n: int, workers: int, progress: bool, extractor: str = "same code"
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # a clean interpreter per process, like the daemon's workers
    with ctx.Pool(workers, initializer=_peer_init, initargs=(extractor,)) as pool:
        list(pool.imap_unordered(_peer_fetch, urls[: min(len(urls), 4 * workers)]))  # warm-up: connect
        pids = [p.pid for p in pool._pool]  # the pool's processes, for their CPU time

        def cpu() -> float:
            return time.process_time() + sum(cpu_seconds(p) or 0.0 for p in pids)

        return _collect(
            f"mp.Pool({workers}) {extractor}",
            lambda: pool.imap_unordered(_peer_fetch, _cycle(urls, n), 4),
            n,
            progress,
            cpu,
        )


def peer_threads(urls: list[str], n: int, conc: int, progress: bool) -> dict[str, Any]:
    local = threading.local()

    def fetch(url: str) -> tuple[float, bool, int]:
        if not hasattr(local, "s"):
            import requests

            local.s = requests.Session()
            local.s.trust_env = False
        t0 = time.perf_counter()
        try:
            r = local.s.get(url, timeout=30)
            text = html_to_text(r.content)
            return time.perf_counter() - t0, 200 <= r.status_code < 300, utf8_len(url, text)
        except Exception:
            return time.perf_counter() - t0, False, 0

    with concurrent.futures.ThreadPoolExecutor(conc) as ex:
        list(ex.map(fetch, urls[: min(len(urls), conc)]))
        return _collect(f"ThreadPool({conc}) same code", lambda: ex.map(fetch, _cycle(urls, n)), n, progress)


def peer_aiohttp(
    urls: list[str], n: int, conc: int, progress: bool, extractor: str = "same code"
) -> dict[str, Any]:
    import aiohttp

    extract = EXTRACTORS[extractor]

    async def run() -> dict[str, Any]:
        conn = aiohttp.TCPConnector(limit=conc, force_close=False)
        async with aiohttp.ClientSession(connector=conn) as s:
            results: list[tuple[float, bool, int]] = []
            state = {"next": 0}
            bar = _bar(n, "aiohttp", progress)

            async def one(count: int, record: bool) -> None:
                while state["next"] < count:
                    i = state["next"]
                    state["next"] = i + 1
                    t0 = time.perf_counter()
                    url = urls[i % len(urls)]
                    try:
                        async with s.get(url) as r:
                            body = await r.read()
                            ok = 200 <= r.status < 300
                        # In the loop, like a typical asyncio crawler: extraction blocks the loop meanwhile.
                        text = extract(body)
                        res = (time.perf_counter() - t0, ok, utf8_len(url, text))
                    except Exception:
                        res = (time.perf_counter() - t0, False, 0)
                    if record:
                        results.append(res)
                        bar.update(1)

            await asyncio.gather(*(one(min(len(urls), conc), False) for _ in range(conc)))  # warm-up
            state["next"] = 0
            c0 = time.process_time()
            t0 = time.perf_counter()
            await asyncio.gather(*(one(n, True) for _ in range(conc)))
            wall = time.perf_counter() - t0
            used = time.process_time() - c0
            bar.close()
            out = _summ(f"asyncio+aiohttp({conc}) {extractor}", results, wall)
            out["cpu_us_per_page"] = round(used * 1e6 / max(1, len(results)), 1)
            return out

    return asyncio.run(run())


def ideal_floor(urls: list[str], n: int, progress: bool) -> dict[str, Any]:
    """One process, one Session, fetch+extract in a loop: the rate of the work itself, times the cores."""
    _peer_init()
    for u in urls[:8]:
        _peer_fetch(u)
    res = _collect("single process", lambda: map(_peer_fetch, _cycle(urls, n)), n, progress)
    res["name"] = f"ideal floor (1 process x {NCPU} cores)"
    res["single_pages_per_s"] = res["pages_per_s"]
    res["pages_per_s"] = round(res["pages_per_s"] * NCPU, 1)
    res["text_mb_per_s"] = round(res["text_mb_per_s"] * NCPU, 2)
    return res


def fetcher_loop(urls: list[str], n: int, progress: bool) -> dict[str, Any]:
    """One process running the daemon's own fetch path (shmfetch.fetch.Fetcher: SSRF pinning, deadline,
    caps, charset, extraction) in a loop: the CPU per page the engine (IPC, master, threads) adds to."""
    from shmfetch.config import Config
    from shmfetch.extract.page import page_fetcher

    cfg = Config.from_dict({"security": {"allow_networks": ["127.0.0.0/8", "::1/128"]}})
    f = page_fetcher(cfg.fetch, cfg.security)

    def one(url: str) -> tuple[float, bool, int]:
        t0 = time.perf_counter()
        out = f.fetch(url)
        return time.perf_counter() - t0, out.ok, utf8_len(url, out.text)

    try:
        for u in urls[:8]:
            one(u)
        return _collect("same code, 1 process loop (Fetcher)", lambda: map(one, _cycle(urls, n)), n, progress)
    finally:
        f.close()


def _cycle(urls: list[str], n: int) -> list[str]:
    return [urls[i % len(urls)] for i in range(n)]


def _collect(
    name: str, start: Callable[[], Any], n: int, progress: bool, cpu: Any = time.process_time
) -> dict[str, Any]:
    """Time ``start()`` (which submits the work and returns an iterator of results) to its last result.

    The work is submitted inside the clock: ``Executor.map`` submits every task at once, and with 64
    threads competing for the GIL, submitting 1200 tasks outside the clock once let the whole run finish
    before the clock started (a ThreadPool "205 225 pages/s").
    """
    bar = _bar(n, name, progress)
    results = []
    c0 = cpu()
    t0 = time.perf_counter()
    for r in start():
        results.append(r)
        bar.update(1)
    wall = time.perf_counter() - t0
    used = cpu() - c0
    bar.close()
    out = _summ(name, results, wall)
    out["cpu_us_per_page"] = round(used * 1e6 / max(1, len(results)), 1)
    return out


def _summ(name: str, results: list[tuple[float, bool, int]], wall: float) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    errors["failed"] = sum(1 for _, ok, _ in results if not ok)
    if not errors["failed"]:
        del errors["failed"]
    return summarize(
        name,
        [r[0] for r in results],
        wall,
        sum(1 for r in results if r[1]),
        sum(r[2] for r in results),
        errors,
    )


# -- P5: overhead per request, idle CPU, memory -------------------------------------------------------


def overhead(socket_path: str, url: str, n: int) -> dict[str, Any]:
    """p50 of a submit round trip (one at a time) against direct fetches of the same URL in this process."""
    import requests

    from shmfetch.config import Config

    out: dict[str, Any] = {"url": url, "samples": n}
    with Client(socket_path, timeout=30) as c:
        for _ in range(50):
            c.fetch(url)
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.fetch(url)
            lat.append(time.perf_counter() - t0)
            if not r.ok:
                raise SystemExit(f"overhead: {url} failed through the daemon: {r.error} {r.message}")
    s = requests.Session()
    s.trust_env = False
    get_only, get_extract = [], []
    for _ in range(50):
        html_to_text(s.get(url).content)
    for _ in range(n):
        t0 = time.perf_counter()
        body = s.get(url).content
        t1 = time.perf_counter()
        html_to_text(body)
        t2 = time.perf_counter()
        get_only.append(t1 - t0)
        get_extract.append(t2 - t0)
    # The daemon's own fetch path (SSRF pinning, deadline watchdog, charset, caps) in this process: the
    # difference to this one is what the IPC and the master cost.
    from shmfetch.extract.page import page_fetcher

    cfg = Config.from_dict({"security": {"allow_networks": ["127.0.0.0/8", "::1/128"]}})
    f = page_fetcher(cfg.fetch, cfg.security)
    for _ in range(50):
        f.fetch(url)
    own = []
    for _ in range(n):
        t0 = time.perf_counter()
        f.fetch(url)
        own.append(time.perf_counter() - t0)
    f.close()
    p = {
        k: pct(v, 50) * 1e6
        for k, v in (("daemon", lat), ("get", get_only), ("get_extract", get_extract), ("fetcher", own))
    }
    out["p50_us"] = {k: round(v, 1) for k, v in p.items()}
    out["overhead_us_vs_get"] = round(p["daemon"] - p["get"], 1)
    out["overhead_us_vs_get_extract"] = round(p["daemon"] - p["get_extract"], 1)
    out["overhead_us_vs_fetcher"] = round(p["daemon"] - p["fetcher"], 1)
    out["ratio_daemon_over_get_extract"] = round(p["daemon"] / p["get_extract"], 3)
    return out


def idle_cpu(socket_path: str, seconds: float) -> dict[str, Any]:
    pids = daemon_pids(socket_path)
    time.sleep(3.0)  # let the last request's wake-ups (and a busy box's run queue) settle
    before = cpu_snapshot(pids)
    time.sleep(seconds)
    after = cpu_snapshot(pids)
    per = {str(p): round((after[p] or 0) - (before[p] or 0), 4) for p in before}
    used = sum(per.values())
    return {
        "seconds": seconds,
        "cpu_s": round(used, 4),
        "pct_of_core": round(100 * used / seconds, 3),
        "cpu_s_by_pid": per,
    }


# -- origins and a private daemon ------------------------------------------------------------------------


class PrivateDaemon(Daemon):
    """``shmfetch serve`` with a temporary config (loopback allowed, no per-host cap, the daemon's default
    timeouts), ready once all its workers run; ``close()`` stops it with SIGUSR1 and removes the config."""

    def __init__(self, workers: int, threads: int, extra: dict[str, dict[str, Any]] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="loadgen."))
        conf: dict[str, dict[str, Any]] = {
            "daemon": {
                "workers": workers, "threads": threads, "socket": self.dir / "d.sock",
                "pidfile": self.dir / "d.pid", "log_level": "warning", "drain_timeout": DaemonConfig.drain_timeout,
            },
            "fetch": {"timeout": FetchConfig.timeout},
            "security": {"allow_networks": "127.0.0.0/8, ::1/128"},
        }  # fmt: skip
        for sec, kv in (extra or {}).items():
            conf.setdefault(sec, {}).update(kv)
        try:
            super().__init__(write_config(self.dir, **conf), self.dir / "d.sock", workers=workers, ready_timeout=30)
        except (RuntimeError, TimeoutError) as e:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise SystemExit(f"the daemon did not start: {e}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def write_site(directory: str, pages: int, seed: int, min_kb: int) -> None:
    """The page set as static files, each with a gzip twin (nginx's gzip_static serves it, as news sites
    serve their pages compressed)."""
    import gzip

    d = Path(directory)
    (d / "p").mkdir(parents=True, exist_ok=True)
    for i in range(pages):
        body = make_page(seed, i, min_kb * 1000)
        path = d / page_path(i).lstrip("/")
        path.write_bytes(body)
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(body, 6, mtime=0))
    (d / SMALL_PATH.lstrip("/")).write_bytes(SMALL_PAGE)
    # The URL list nginx_origin.sh hands to --urls (with its port substituted).
    (d / "paths.txt").write_text("".join(page_path(i) + "\n" for i in range(pages)))
    print(f"wrote {pages} pages (seed {seed}, {min_kb}-300 KB) to {d}/p/")


# -- main ---------------------------------------------------------------------------------------------


def _socket_from(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    from shmfetch.config import load

    return load(args.config or str(ROOT / "config.ini")).daemon.socket


def one_round(args: argparse.Namespace, socket_path: str, urls: list[str], workers: int) -> dict[str, Any]:
    prog = not args.no_progress
    rnd: dict[str, Any] = {}
    # Warm-up: every worker thread opens its keep-alive connection before the clock starts.
    warm = min(args.n, max(200, 4 * args.c))
    asyncio.run(drive(socket_path, urls, warm, args.c, args.connections, None, False, args.http))
    rnd["daemon"] = run_daemon(args, socket_path, urls, args.n)
    if args.front_compare:
        # The same daemon through the other front, right after: the HTTP API against the Unix socket.
        unix = run_daemon(argparse.Namespace(**{**vars(args), "http": None}), socket_path, urls, args.n)
        rnd["peers"] = [unix]
        rnd["http_over_unix"] = round(rnd["daemon"]["pages_per_s"] / unix["pages_per_s"], 3)
    if args.compare:
        n = rnd["daemon"]["requests"]  # with --duration the peers do as many requests as the daemon did
        peers = [
            peer_pool(urls, n, workers, prog),
            peer_threads(urls, n, args.c, prog),
            peer_aiohttp(urls, n, args.c, prog),
            peer_pool(urls, n, NCPU, prog, "naive lxml"),
            peer_aiohttp(urls, n, args.c, prog, "naive lxml"),
            peer_pool(urls, n, NCPU, prog, "html_text"),
        ]
        floor = ideal_floor(urls, max(100, n // 4), prog)
        loop = fetcher_loop(urls, max(100, n // 4), prog)
        d = rnd["daemon"]["pages_per_s"]
        best = max(peers, key=lambda p: p["pages_per_s"])
        naive = max((p for p in peers if p["name"].endswith("naive lxml")), key=lambda p: p["pages_per_s"])
        rnd["peers"] = peers
        rnd["ideal_floor"] = floor
        rnd["same_code_loop"] = loop
        rnd["ratios"] = {p["name"]: round(d / p["pages_per_s"], 3) for p in peers}
        rnd["ratio_vs_best_peer"] = round(d / best["pages_per_s"], 3)
        rnd["best_peer"] = best["name"]
        rnd["ratio_vs_best_naive_peer"] = round(d / naive["pages_per_s"], 3)
        rnd["best_naive_peer"] = naive["name"]
        rnd["ratio_vs_ideal_floor"] = round(d / floor["pages_per_s"], 3)
        # CPU per page is robust to other load on the box (wall rates are not): peer CPU / daemon CPU,
        # above 1 means the daemon spends less CPU per page.
        dc = rnd["daemon"]["cpu_us_per_page"]
        rnd["cpu_ratios"] = {
            p["name"]: round(p["cpu_us_per_page"] / dc, 3) for p in [*peers, floor, loop] if dc
        }
        # The engine's cost: the daemon's CPU per page (master + workers) over the same fetch+extract code
        # in one process (target <= 1.05).
        rnd["daemon_cpu_over_same_code_loop"] = round(dc / loop["cpu_us_per_page"], 3) if dc else None
    return rnd


def print_round(i: int, rnd: dict[str, Any]) -> None:
    d = rnd["daemon"]
    print(f"\n== round {i}")
    rows = [d, *rnd.get("peers", []), *(rnd[k] for k in ("ideal_floor", "same_code_loop") if k in rnd)]
    print(
        f"{'':42} {'pages/s':>9} {'text MB/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'CPU us/pg':>9}"
        "  errors"
    )
    for r in rows:
        print(
            f"{r['name']:42} {r['pages_per_s']:9.1f} {r['text_mb_per_s']:9.2f} {r['p50_ms']:8.2f} "
            f"{r['p95_ms']:8.2f} {r['p99_ms']:8.2f} {r.get('cpu_us_per_page', 0):9.0f}  {r['errors'] or '-'}"
        )
    print(f"requests per worker: {d['per_worker']}")
    c = d["cpu"]
    print(
        f"daemon CPU per page: master {c['master_us_per_page']} us, workers {c['workers_us_per_page']} us "
        f"(total {c['total_us_per_page']} us; loadgen itself {c['loadgen_us_per_page']} us)"
    )
    print(f"worker memory (KiB): {d['worker_mem_kib']}")
    if "http_over_unix" in rnd:
        print(f"pages/s through the HTTP API / through the Unix socket: {rnd['http_over_unix']:.3f}")
    if "ratios" in rnd:
        for name, ratio in rnd["ratios"].items():
            print(f"daemon / {name}: {ratio:.3f}")
        print(f"daemon / best peer ({rnd['best_peer']}): {rnd['ratio_vs_best_peer']:.3f}")
        print(f"daemon / best naive peer ({rnd['best_naive_peer']}): {rnd['ratio_vs_best_naive_peer']:.3f}")
        print(f"daemon CPU per page / same code in 1 process: {rnd['daemon_cpu_over_same_code_loop']}")
        print(f"daemon / ideal floor: {rnd['ratio_vs_ideal_floor']:.3f}")
        for name, ratio in rnd["cpu_ratios"].items():
            print(f"CPU per page, {name} / daemon: {ratio:.3f}")


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def med(get: Any) -> float:
        return round(statistics.median(get(r) for r in rounds), 3)

    out: dict[str, Any] = {
        "daemon_pages_per_s": med(lambda r: r["daemon"]["pages_per_s"]),
        "daemon_text_mb_per_s": med(lambda r: r["daemon"]["text_mb_per_s"]),
        "daemon_p50_ms": med(lambda r: r["daemon"]["p50_ms"]),
        "daemon_p99_ms": med(lambda r: r["daemon"]["p99_ms"]),
        "master_us_per_page": med(lambda r: r["daemon"]["cpu"]["master_us_per_page"]),
        "workers_us_per_page": med(lambda r: r["daemon"]["cpu"]["workers_us_per_page"]),
    }
    if "ratios" in rounds[0]:
        for k in range(len(rounds[0]["peers"])):
            name = rounds[0]["peers"][k]["name"]
            out[f"pages_per_s[{name}]"] = med(lambda r, k=k: r["peers"][k]["pages_per_s"])
            out[f"ratio[{name}]"] = med(lambda r, name=name: r["ratios"][name])
        out["ideal_floor_pages_per_s"] = med(lambda r: r["ideal_floor"]["pages_per_s"])
        out["ratio_vs_best_peer"] = med(lambda r: r["ratio_vs_best_peer"])
        out["ratio_vs_best_naive_peer"] = med(lambda r: r["ratio_vs_best_naive_peer"])
        out["daemon_cpu_over_same_code_loop"] = med(lambda r: r["daemon_cpu_over_same_code_loop"])
        out["same_code_loop_cpu_us_per_page"] = med(lambda r: r["same_code_loop"]["cpu_us_per_page"])
        out["ratio_vs_ideal_floor"] = med(lambda r: r["ratio_vs_ideal_floor"])
        out["daemon_cpu_us_per_page"] = med(lambda r: r["daemon"]["cpu_us_per_page"])
        for name in rounds[0]["cpu_ratios"]:
            out[f"cpu_ratio[{name} / daemon]"] = med(lambda r, name=name: r["cpu_ratios"][name])
    return out


def sweep(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """P2: for each ``threads`` value and each origin latency, a fresh origin and a fresh private daemon;
    throughput at each latency as a ratio of the same setting's throughput at the first latency."""
    threads = [int(t) for t in args.sweep_threads.split(",")]
    lats = [float(x) for x in args.latencies.split(",")]
    rows = []
    for rep in range(args.repeat):
        for t in threads:
            row: dict[str, Any] = {"repetition": rep + 1, "threads": t}
            # Enough requests in flight to fill every thread of every worker, whatever the latency.
            conc = max(args.c, 2 * args.workers * t)
            for lat in lats:
                origin = OriginProcess(args.pages, args.seed, lat)
                try:
                    daemon = PrivateDaemon(
                        args.workers, t, {"daemon": {"max_inflight_per_worker": max(64, 2 * t)}}
                    )
                    try:
                        a = argparse.Namespace(**{**vars(args), "c": conc})
                        asyncio.run(
                            drive(
                                daemon.socket,
                                origin.urls,
                                max(200, 2 * conc),
                                conc,
                                a.connections,
                                None,
                                False,
                            )
                        )
                        res = run_daemon(a, daemon.socket, origin.urls, args.n)
                    finally:
                        daemon.close()
                finally:
                    origin.close()
                row[f"pages_per_s@{lat:g}ms"] = res["pages_per_s"]
                row[f"p50_ms@{lat:g}ms"] = res["p50_ms"]
                row[f"worker_hwm_kib@{lat:g}ms"] = max(m.get("VmHWM", 0) for m in res["worker_mem_kib"])
                row["concurrency"] = conc
            base = row[f"pages_per_s@{lats[0]:g}ms"]
            for lat in lats[1:]:
                row[f"ratio@{lat:g}ms"] = round(row[f"pages_per_s@{lat:g}ms"] / base, 3) if base else 0.0
            print(json.dumps(row))
            rows.append(row)
    report["sweep"] = rows
    med: dict[str, Any] = {}
    for t in threads:
        mine = [r for r in rows if r["threads"] == t]
        med[str(t)] = {
            k: round(statistics.median(r[k] for r in mine), 3) for k in mine[0] if k != "repetition"
        }
    report["median"] = med
    print("\n== medians over", args.repeat, "repetition(s)")
    for t, m in med.items():
        print(f"  threads={t}: {m}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="requests per measured run (default 2000)")
    ap.add_argument("-c", type=int, default=64, help="requests in flight (default 64)")
    ap.add_argument("--socket", help="the daemon's socket")
    ap.add_argument("-C", "--config", help="read the socket path from this config")
    ap.add_argument("--spawn", action="store_true", help="start a private daemon for this run")
    ap.add_argument("--workers", type=int, default=2, help="with --spawn: worker processes (default 2)")
    ap.add_argument("--threads", type=int, default=16, help="with --spawn: threads per worker (default 16)")
    ap.add_argument("--connections", type=int, default=2, help="client connections to the daemon (default 2)")
    ap.add_argument("--duration", type=float, help="stop the daemon run after this many seconds")
    ap.add_argument("--urls", help="file of URLs, one a line, instead of the own origin")
    ap.add_argument("--pages", type=int, default=200, help="own origin: pages in the set (default 200)")
    ap.add_argument("--seed", type=int, default=1, help="own origin: seed of the page set (default 1)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="own origin: delay per response")
    ap.add_argument("--min-kb", type=int, default=10, help="smallest page of the set (default 10; news: 50)")
    ap.add_argument("--small", action="store_true", help="request only the origin's small page (/small.html)")
    ap.add_argument("--write-site", metavar="DIR", help="write the page set as static files to DIR and exit")
    ap.add_argument("--compare", action="store_true", help="also run the peers and the ideal floor")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions; medians are reported (default 1)")
    ap.add_argument("--overhead", action="store_true", help="P5: overhead per request, idle CPU, worker RSS")
    ap.add_argument("--overhead-url", help="with --overhead: the small page (default: the smallest one)")
    ap.add_argument("--idle-seconds", type=float, default=10.0, help="with --overhead (default 10)")
    ap.add_argument("--sweep-threads", metavar="LIST", help="P2: e.g. 8,16,32 (own origin, private daemons)")
    ap.add_argument("--latencies", default="0,100", help="with --sweep-threads: origin latencies in ms")
    ap.add_argument("--http", metavar="HOST:PORT", help="drive the daemon's HTTP API instead of its socket")
    ap.add_argument(
        "--http-token-file",
        metavar="FILE",
        help="with --http: the API's bearer token, as [http] token_file (default: $SHMFETCH_HTTP_TOKEN; a "
        "--spawn daemon gets the same token)",
    )
    ap.add_argument(
        "--front-compare",
        action="store_true",
        help="with --spawn: the HTTP API (on a free loopback port) and the Unix socket, same daemon, same run",
    )
    ap.add_argument("--json", metavar="FILE", help="write the report as JSON")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = ap.parse_args(argv)
    if args.http_token_file:
        from shmfetch.config import TOKEN_ENV, HttpConfig, http_token

        # Through the environment: HttpFront reads it, and a --spawn daemon inherits it.
        os.environ[TOKEN_ENV] = http_token(HttpConfig(token_file=args.http_token_file)) or ""
    if args.write_site:
        write_site(args.write_site, args.pages, args.seed, args.min_kb)
        return 0
    if missing := check_imports(args):
        print(missing, file=sys.stderr)
        return 2

    if args.sweep_threads:
        report = {
            "argv": sys.argv[1:],
            "machine": _machine(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        report["workers"] = args.workers
        sweep(args, report)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(report, fh, indent=1)
        return 0

    cleanup = []
    report: dict[str, Any] = {
        "argv": sys.argv[1:],
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        if args.urls:
            with open(args.urls) as fh:
                urls = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
            for u in urls:
                host = u.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
                if host not in ("127.0.0.1", "localhost", "[::1]"):
                    raise SystemExit(f"loadgen fetches from loopback only, not {u}")
        else:
            origin = OriginProcess(args.pages, args.seed, args.latency_ms, args.min_kb)
            cleanup.append(origin)
            urls = origin.urls
        small_url = urls[0].rsplit("/p/", 1)[0] + SMALL_PATH  # the origin's (or nginx site's) small page
        if args.small:
            urls = [small_url]
        if args.front_compare and not args.spawn:
            raise SystemExit("--front-compare needs --spawn")
        if args.spawn:
            extra = None
            if args.front_compare:
                args.http = f"127.0.0.1:{free_port()}"
                extra = {"http": {"listen": args.http}}
            daemon = PrivateDaemon(args.workers, args.threads, extra)
            cleanup.append(daemon)
            socket_path = daemon.socket
        else:
            socket_path = _socket_from(args)
        workers = len(daemon_pids(socket_path)["workers"])
        report.update(
            workers=workers,
            threads=args.threads if args.spawn else None,
            concurrency=args.c,
            urls=len(urls),
            latency_ms=None if args.urls else args.latency_ms,
        )
        if args.overhead:
            url = args.overhead_url or small_url
            report["overhead"] = overhead(socket_path, url, max(200, min(args.n, 2000)))
            print(json.dumps(report["overhead"], indent=1))
            # Load at -c, then the memory high-water mark and the idle CPU after it.
            rnd = one_round(args, socket_path, urls, workers)
            print_round(1, rnd)
            report["load"] = rnd["daemon"]
            report["idle"] = idle_cpu(socket_path, args.idle_seconds)
            pids = daemon_pids(socket_path)
            report["mem_kib"] = {
                "master": proc_mem(pids["master"]),
                "workers": [proc_mem(p) for p in pids["workers"]],
            }
            print(json.dumps({"idle": report["idle"], "mem_kib": report["mem_kib"]}, indent=1))
        else:
            rounds = []
            for i in range(args.repeat):
                rnd = one_round(args, socket_path, urls, workers)
                print_round(i + 1, rnd)
                rounds.append(rnd)
            report["rounds"] = rounds
            report["median"] = medians(rounds)
            print("\n== medians over", len(rounds), "round(s)")
            for k, v in report["median"].items():
                print(f"  {k}: {v}")
    finally:
        for obj in reversed(cleanup):
            obj.close()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


def _machine() -> dict[str, Any]:
    return {
        "nproc": NCPU,
        "cpu": _cpu_model(),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
