"""Cluster benchmark: what Redis Streams cost against the Unix socket, and the broker's own ceiling.

Everything on loopback, in one run, with a private redis-server (AOF on, as in the tests) and the
loadgen's own origin (shmfetch/testing/origin.py in its own process: 200 seeded pages of 12-282 KB). Each repetition runs:

* ``local``: one daemon with two workers, fed ``-n`` pages through its Unix socket by ``shmfetch.Client``
  (``fetch_many``, ``-c`` in flight);
* ``cluster``: two daemons with one worker each, consuming one job stream: ``-n`` jobs are enqueued
  (pipelined) and the clock stops when the last result is in the results stream;
* ``empty``: the same two daemons and ``--empty-n`` jobs for the origin's 200-byte page, so the fetch and
  extraction cost next to nothing and jobs/s shows what the broker path (XREADGROUP, COMMIT script,
  results stream) sustains; next to it the same small page through one two-worker daemon's socket.

It prints pages/s per run and the ratio cluster ÷ local of each repetition, then the medians. It also
sums the CPU time of every daemon process (and, for the cluster, of Redis) over each run: on a machine
whose cores are all busy, pages/s = cores ÷ CPU per page, so local ÷ cluster CPU per page is the pages/s
ratio an otherwise idle machine would show, and it does not depend on what else runs.

    python tools/bench_cluster.py                       # -n 2000 --repeat 5 --empty-n 5000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
# The daemons run from a temporary directory: let them import this checkout, installed or not.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

from loadgen import PrivateDaemon, cpu_seconds, daemon_pids  # noqa: E402

from shmfetch import Client  # noqa: E402
from shmfetch.cluster.client import connect, enqueue  # noqa: E402
from shmfetch.testing.origin import OriginProcess  # noqa: E402
from shmfetch.testing.pageset import SMALL_PATH  # noqa: E402
from shmfetch.testing.redis_server import RedisServer  # noqa: E402


def daemons_cpu(daemons: list[PrivateDaemon]) -> float:
    """CPU seconds used so far by the masters and workers of ``daemons``."""
    total = 0.0
    for d in daemons:
        pids = daemon_pids(d.socket)
        total += sum(cpu_seconds(p) or 0.0 for p in [pids["master"], *pids["workers"]])
    return total


def run_local(urls: list[str], n: int, threads: int, conc: int) -> dict[str, Any]:
    d = PrivateDaemon(2, threads)
    try:
        with Client(d.socket) as c:
            cpu0 = daemons_cpu([d])
            t0 = time.perf_counter()
            ok = sum(r.ok for r in c.fetch_many(itertools.islice(itertools.cycle(urls), n), concurrency=conc))
            wall = time.perf_counter() - t0
            cpu = daemons_cpu([d]) - cpu0
    finally:
        d.close()
    return {
        "n": n, "ok": ok, "wall_s": round(wall, 3), "per_s": round(n / wall, 1),
        "cpu_ms_per_page": round(cpu / n * 1e3, 3),
    }  # fmt: skip


def run_cluster(redis_url: str, tag: str, urls: list[str], n: int, threads: int) -> dict[str, Any]:
    jobs, results = f"bench:{tag}:jobs", f"bench:{tag}:results"
    cluster = {"redis": redis_url, "jobs": jobs, "results": results}
    daemons = [PrivateDaemon(1, threads, {"cluster": cluster}) for _ in range(2)]
    r = connect(redis_url)
    try:
        time.sleep(0.5)  # both consumers joined and block in XREADGROUP
        cpu0, dcpu0 = redis_cpu(r), daemons_cpu(daemons)
        t0 = time.perf_counter()
        for _ in enqueue(r, jobs, itertools.islice(itertools.cycle(urls), n)):
            pass
        seen, cursor, ok, errors = 0, "0-0", 0, Counter()
        deadline = time.monotonic() + 600
        while seen < n and time.monotonic() < deadline:
            for _stream, entries in r.xread({results: cursor}, count=1000, block=1000) or []:
                for eid, fields in entries:
                    cursor = eid
                    seen += 1
                    ok += fields.get(b"ok") == b"true"
                    if fields.get(b"ok") != b"true":
                        errors[fields.get(b"error", b"?").decode()] += 1
        wall = time.perf_counter() - t0
        cpu, dcpu = redis_cpu(r) - cpu0, daemons_cpu(daemons) - dcpu0
    finally:
        for d in daemons:
            d.close()
        r.delete(jobs, results, f"{jobs}:ok")  # every run starts from the same Redis state
        r.close()
    assert seen == n, f"only {seen} of {n} results"
    return {
        "n": n, "ok": ok, "wall_s": round(wall, 3), "per_s": round(n / wall, 1),
        "redis_cpu_us_per_job": round(cpu / n * 1e6, 1),
        "cpu_ms_per_page": round((cpu + dcpu) / n * 1e3, 3),  # daemons and Redis
        "errors": dict(errors),
    }  # fmt: skip


def redis_cpu(r: Any) -> float:
    """CPU seconds the Redis server used so far (user + system, main thread and children)."""
    info = r.info("cpu")
    return sum(float(info[k]) for k in ("used_cpu_sys", "used_cpu_user"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="pages per local and cluster run (default 2000)")
    ap.add_argument("--empty-n", type=int, default=5000, help="jobs of the empty-page run (default 5000)")
    ap.add_argument("-c", type=int, default=64, help="local client: requests in flight (default 64)")
    ap.add_argument("--threads", type=int, default=16, help="threads per worker (default 16)")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions; medians are reported (default 5)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    origin = OriginProcess(200, 1, 0.0)
    tmp = tempfile.TemporaryDirectory(prefix="bench_cluster.")
    server = RedisServer(Path(tmp.name))
    with connect(server.url) as r:
        # AOF stays on (appendfsync everysec, as deployed), but no AOF rewrite is triggered by the earlier
        # runs' growth in the middle of a later run: a rewrite forks and copies everything, and which run
        # it lands in is luck.
        r.config_set("auto-aof-rewrite-percentage", 0)
    rounds = []
    try:
        small = [f"http://127.0.0.1:{origin.port}{SMALL_PATH}"]
        for i in range(args.repeat):
            # alternate which goes first, so that a trend in the machine's load hits both alike
            if i % 2:
                cluster = run_cluster(server.url, f"{i}p", origin.urls, args.n, args.threads)
                local = run_local(origin.urls, args.n, args.threads, args.c)
            else:
                local = run_local(origin.urls, args.n, args.threads, args.c)
                cluster = run_cluster(server.url, f"{i}p", origin.urls, args.n, args.threads)
            empty = run_cluster(server.url, f"{i}e", small, args.empty_n, args.threads)
            empty_local = run_local(small, args.empty_n, args.threads, args.c)
            rnd = {"local": local, "cluster": cluster, "empty": empty, "empty_local": empty_local}
            rnd["ratio"] = round(cluster["per_s"] / local["per_s"], 3)
            # On a CPU-bound box pages/s = cores / CPU per page, so this is the ratio an idle box would show.
            rnd["cpu_ratio"] = round(local["cpu_ms_per_page"] / cluster["cpu_ms_per_page"], 3)
            rnd["empty_ratio"] = round(empty["per_s"] / empty_local["per_s"], 3)
            rounds.append(rnd)
            print(
                f"round {i + 1}: local 1x2 workers {local['per_s']:.1f} pages/s | cluster 2x1 workers "
                f"{cluster['per_s']:.1f} pages/s | ratio {rnd['ratio']:.3f} | CPU per page local "
                f"{local['cpu_ms_per_page']:.2f} ms, cluster {cluster['cpu_ms_per_page']:.2f} ms (incl. Redis), "
                f"ratio {rnd['cpu_ratio']:.3f} | empty pages: cluster "
                f"{empty['per_s']:.1f} jobs/s, local {empty_local['per_s']:.1f}, ratio {rnd['empty_ratio']:.3f} | "
                f"Redis CPU per job {cluster['redis_cpu_us_per_job']:.0f} us (pages), "
                f"{empty['redis_cpu_us_per_job']:.0f} us (empty)",
                flush=True,
            )
    finally:
        server.stop()
        tmp.cleanup()
        origin.close()
    med = {
        "local_pages_s": statistics.median(r["local"]["per_s"] for r in rounds),
        "cluster_pages_s": statistics.median(r["cluster"]["per_s"] for r in rounds),
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds),
        "empty_jobs_s": statistics.median(r["empty"]["per_s"] for r in rounds),
        "empty_local_s": statistics.median(r["empty_local"]["per_s"] for r in rounds),
        "empty_ratio": statistics.median(r["empty_ratio"] for r in rounds),
        "redis_cpu_us_per_job_pages": statistics.median(r["cluster"]["redis_cpu_us_per_job"] for r in rounds),
        "redis_cpu_us_per_job_empty": statistics.median(r["empty"]["redis_cpu_us_per_job"] for r in rounds),
    }
    print(
        f"median of {len(rounds)}: local {med['local_pages_s']:.1f} pages/s, cluster {med['cluster_pages_s']:.1f} "
        f"pages/s, cluster/local {med['ratio']:.3f} (by CPU per page {med['cpu_ratio']:.3f}); empty pages: cluster {med['empty_jobs_s']:.1f} jobs/s, "
        f"local {med['empty_local_s']:.1f}, cluster/local {med['empty_ratio']:.3f}; Redis CPU per job "
        f"{med['redis_cpu_us_per_job_pages']:.0f} us (pages), {med['redis_cpu_us_per_job_empty']:.0f} us (empty)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "rounds": rounds, "median": med}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
