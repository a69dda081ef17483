"""Head-of-line waits: latency of fast requests while one slow host keeps a worker's threads busy.

One command, on an idle machine, before and after a change to the dispatch (run it on both checkouts):

    python tools/bench_hol.py                       # 2 workers x 4 threads, 4 slow (5 s), 100 fast, 3 rounds
    python tools/bench_hol.py --threads 16 --slow 16 --fast 400 --json /tmp/hol.json

Two origins (tools/origin_server.py, separate processes, so separate hosts for the per-host gate): a slow
one answering after ``--slow-ms`` and a fast one serving a small page at once. A private daemon
(``--workers`` x ``--threads``, ``[daemon] max_inflight_per_worker`` at its default unless ``--credit``).
Each round sends, pipelined on one connection, ``--slow`` slow requests interleaved with fast ones so that
the round robin puts every slow one on the same worker (one slow, then workers-1 fast, and so on), then
``--fast`` more fast requests at once. It prints the fast requests' latency (from the send of the batch to
their answer): p50, p99, mean and max over all rounds. While a worker's threads are all busy with the slow
host, a request handed to that worker waits in its ring for them: with that head-of-line wait, about one fast
request in ``--workers`` waits for ``--slow-ms`` (p99, mean and max show it; p50 too from 3 workers on);
without it, every figure stays at what the other workers need for the fast pages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from loadgen import PrivateDaemon, pct  # noqa: E402

from shmfetch import Client  # noqa: E402
from shmfetch.testing.origin import OriginProcess  # noqa: E402
from shmfetch.testing.pageset import SMALL_PATH  # noqa: E402


def round_urls(slow: OriginProcess, fast_port: int, n_slow: int, n_fast: int, workers: int, rnd: int) -> list:
    """The batch of one round: slow requests interleaved so that they share one worker, then the fast."""
    fast = (f"http://127.0.0.1:{fast_port}{SMALL_PATH}?r={rnd}&i={i}" for i in range(10**9))
    urls: list[tuple[str, bool]] = []
    for i in range(n_slow):
        urls.append((f"{slow.urls[i % len(slow.urls)]}?r={rnd}&i={i}", True))
        urls += [(next(fast), False) for _ in range(workers - 1)]
    urls += [(next(fast), False) for _ in range(n_fast)]
    return urls


def one_round(socket: str, urls: list[tuple[str, bool]]) -> tuple[list[float], int, dict[str, int]]:
    """Latencies (s) of the fast requests of one batch, the workers that got slow ones, errors by code."""
    is_slow = dict(urls)
    errors: dict[str, int] = {}
    slow_workers = set()
    lat = []
    with Client(socket, timeout=600) as c:
        for _ in range(2):  # warm: a connection per worker thread, nothing left in flight
            c.fetch(urls[-1][0])
        t0 = time.monotonic()
        for r in c.fetch_many([u for u, _ in urls], concurrency=len(urls)):
            if not r.ok:
                errors[r.error] = errors.get(r.error, 0) + 1
            if is_slow[r.url]:
                slow_workers.add(r.worker)
            else:
                lat.append(time.monotonic() - t0)
    return lat, len(slow_workers), errors


def bench(args: argparse.Namespace) -> dict[str, Any]:
    slow = OriginProcess(max(1, args.slow), 1, args.slow_ms)
    fast = OriginProcess(1, 1, 0.0)
    extra = {"fetch": {"timeout": args.slow_ms / 1000 + 30}}
    if args.credit:
        extra["daemon"] = {"max_inflight_per_worker": args.credit}
    lat: list[float] = []
    report: dict[str, Any] = {"args": vars(args), "rounds": []}
    try:
        daemon = PrivateDaemon(args.workers, args.threads, extra)
        try:
            for rnd in range(args.rounds):
                urls = round_urls(slow, fast.port, args.slow, args.fast, args.workers, rnd)
                got, slow_on, errors = one_round(daemon.socket, urls)
                lat += got
                p50, p99 = pct(got, 50) * 1e3, pct(got, 99) * 1e3
                rec = {"p50_ms": p50, "p99_ms": p99, "slow_on_workers": slow_on, "errors": errors}
                report["rounds"].append(rec)
                print(
                    f"round {rnd + 1}: fast p50 {p50:8.1f} ms  p99 {p99:8.1f} ms"
                    f"  (slow requests on {slow_on} worker(s); errors {errors or 'none'})"
                )
        finally:
            daemon.close()
    finally:
        slow.close()
        fast.close()
    report["fast"] = {
        "n": len(lat),
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "mean_ms": sum(lat) / max(1, len(lat)) * 1e3,
        "max_ms": max(lat, default=0) * 1e3,
    }
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--credit", type=int, default=0, help="max_inflight_per_worker (default: the config's)")
    ap.add_argument("--slow", type=int, default=4, help="slow requests per round (default 4)")
    ap.add_argument("--slow-ms", type=float, default=5000.0, help="the slow host's delay (default 5000)")
    ap.add_argument("--fast", type=int, default=100, help="fast requests after them (default 100)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)
    report = bench(args)
    f = report["fast"]
    print(
        f"fast requests ({f['n']}): p50 {f['p50_ms']:.1f} ms  p99 {f['p99_ms']:.1f} ms"
        f"  mean {f['mean_ms']:.1f} ms  max {f['max_ms']:.1f} ms"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
