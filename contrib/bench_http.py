"""Per-request cost of the HTTP API front end, against the Unix-socket client (docs/OPERATIONS.md).

    python contrib/bench_http.py [--seq 300] [--conc 1500] [--parallel 32] [--rounds 5]

Runs a small origin on 127.0.0.1 and a daemon with ``[http] listen`` on a loopback port: aiohttp.web, what
shmfetch/fronts/http.py ships. (The h11 front end it was once measured against was built on the master's
private internals and has been removed; docs/OPERATIONS.md keeps its figures.) Fetches the same small
page sequentially (one keep-alive connection,
``requests``) and concurrently (``aiohttp`` client, --parallel connections), and ``GET /stats`` (the front
end alone, no fetch); the Unix-socket baseline uses ``shmfetch.Client`` (``fetch``, ``fetch_many``).
Reports wall time per request at the client and the master process's CPU time per request, medians of
interleaved rounds. Needs aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout: import the shmfetch next to this file, and let the daemon it starts do the same.
REPO = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, REPO)
os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")

from shmfetch.testing.daemon import Daemon, write_config  # noqa: E402
from shmfetch.testing.net import free_port  # noqa: E402
from shmfetch.testing.origin import Origin  # noqa: E402

BODY = b"<html><body><h1>Small page</h1><p>" + b"Some words of text. " * 20 + b"</p></body></html>"


def serve(backend: str, config: str) -> int:
    """The daemon of one front end (``aiohttp``: the shipped fronts/http.py, the only one left)."""
    from shmfetch.api.cli import main

    return main(["serve", "-c", config])


# -- the measurement ------------------------------------------------------------------------------------


def _seq_http(base: str, path: str, n: int) -> float:
    import requests

    with requests.Session() as s:
        s.get(base + path).raise_for_status()  # warm-up: connect, import paths
        t0 = time.perf_counter()
        for _ in range(n):
            r = s.get(base + path)
            assert r.status_code == 200, r.text
        return time.perf_counter() - t0


def _conc_http(base: str, path: str, n: int, parallel: int) -> float:
    import aiohttp

    async def run() -> float:
        conn = aiohttp.TCPConnector(limit=parallel)
        async with aiohttp.ClientSession(connector=conn) as s:
            left = iter(range(n))

            async def one() -> None:
                for _ in left:
                    async with s.get(base + path) as r:
                        await r.read()
                        assert r.status == 200

            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(parallel)))
            return time.perf_counter() - t0

    return asyncio.run(run())


def _seq_unix(sock: str, url: str, n: int) -> float:
    from shmfetch import Client

    with Client(sock) as c:
        c.fetch(url)
        t0 = time.perf_counter()
        for _ in range(n):
            r = c.fetch(url)
            assert r.ok, r
        return time.perf_counter() - t0


def _conc_unix(sock: str, url: str, n: int, parallel: int) -> float:
    from shmfetch import Client

    with Client(sock) as c:
        t0 = time.perf_counter()
        got = sum(1 for r in c.fetch_many(itertools.repeat(url, n), concurrency=parallel) if r.ok)
        assert got == n
        return time.perf_counter() - t0


def _stats_unix(sock: str, n: int) -> float:
    from shmfetch import Client

    with Client(sock) as c:
        c.stats()
        t0 = time.perf_counter()
        for _ in range(n):
            c.stats()
        return time.perf_counter() - t0


def _with_n(runs: list, args: argparse.Namespace) -> list:
    """(who, what, fn) -> (who, what, fn, requests the run makes)."""
    return [(w, t, fn, args.conc if "concurrent" in t else args.seq) for w, t, fn in runs]


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (clock ticks of 10 ms)."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _daemon(backend: str, tmp: Path, port: int) -> Daemon:
    """A daemon with this front end on 127.0.0.1:``port``, started through ``serve`` (which runs it in
    this script's process, so its pid is the daemon's), ready once its workers run."""
    sections = {
        "daemon": {"workers": 2, "threads": 8, "socket": tmp / f"{backend}.sock",
                   "pidfile": tmp / f"{backend}.pid", "log_level": "warning"},
        "http": {"listen": f"127.0.0.1:{port}"},
    }  # fmt: skip
    (tmp / backend).mkdir()
    cfg = write_config(tmp / backend, **sections)
    return Daemon(cfg, tmp / f"{backend}.sock", argv=[sys.executable, __file__, "serve", backend, str(cfg)], workers=2)


def _runs(args: argparse.Namespace, procs: dict, backends: list[str], sock: str, url: str) -> list[tuple]:
    """One round's measurements: (front end, test, master pid, requests, function giving s/request)."""
    fetch_path = f"/fetch?url={url}"
    runs = [
        ("unix socket", "fetch sequential", lambda: _seq_unix(sock, url, args.seq) / args.seq),
        (
            "unix socket",
            "fetch concurrent",
            lambda: _conc_unix(sock, url, args.conc, args.parallel) / args.conc,
        ),
        ("unix socket", "stats sequential", lambda: _stats_unix(sock, args.seq) / args.seq),
    ]
    out = [(w, t, procs[backends[0]][0].pid, n, fn) for w, t, fn, n in _with_n(runs, args)]
    for b in backends:
        base = procs[b][1]
        more = [
            (b, "fetch sequential", lambda base=base: _seq_http(base, fetch_path, args.seq) / args.seq),
            (
                b,
                "fetch concurrent",
                lambda base=base: _conc_http(base, fetch_path, args.conc, args.parallel) / args.conc,
            ),
            (b, "stats sequential", lambda base=base: _seq_http(base, "/stats", args.seq) / args.seq),
        ]
        out += [(who, what, procs[b][0].pid, n, fn) for who, what, fn, n in _with_n(more, args)]
    return out


def _report(samples: dict, cpu: dict, args: argparse.Namespace) -> None:
    print(
        f"{'front end':<12} {'test':<18} {'wall µs/req':>11} {'req/s':>7} {'master CPU µs/req':>18}"
        f"   (medians of {args.rounds} rounds)"
    )
    out = []
    for (who, what), xs in samples.items():
        sec = statistics.median(xs)
        mcpu = statistics.median(cpu[(who, what)])
        out.append({"front": who, "test": what, "us": round(sec * 1e6), "master_cpu_us": round(mcpu * 1e6)})
        print(f"{who:<12} {what:<18} {sec * 1e6:>11.0f} {1 / sec:>7.0f} {mcpu * 1e6:>18.0f}")
    if args.json:
        print(json.dumps(out))


def bench(args: argparse.Namespace) -> None:
    origin = Origin()
    origin.respond("/small", 200, BODY, {"Content-Type": "text/html; charset=utf-8"})
    url = origin.url("/small")
    backends = args.backends.split(",")
    # The daemons run at once and the rounds interleave, so that load from anything else on the machine
    # spreads over all front ends alike; each figure is the median over the rounds.
    samples: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # the master's CPU seconds per request
    with tempfile.TemporaryDirectory(prefix="shmfetch-bench-") as td:
        tmp = Path(td)
        procs = {}
        try:
            for b in backends:
                procs[b] = (_daemon(b, tmp, port := free_port()), f"http://127.0.0.1:{port}")
            sock = str(tmp / f"{backends[0]}.sock")
            for _ in range(args.rounds):
                for who, what, pid, n, fn in _runs(args, procs, backends, sock, url):
                    c0 = _cpu_s(pid)
                    wall = fn()
                    cpu.setdefault((who, what), []).append((_cpu_s(pid) - c0) / n)
                    samples.setdefault((who, what), []).append(wall)
        finally:
            for d, _ in procs.values():
                d.stop()
    origin.stop()
    _report(samples, cpu, args)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        return serve(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, default=400)
    ap.add_argument("--conc", type=int, default=2000)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="aiohttp")
    ap.add_argument("--json", action="store_true")
    bench(ap.parse_args())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
