"""Soak: push many requests through a real daemon and check that nothing grows.

Starts its own origin (shmfetch/testing/origin.py in a separate process, on 127.0.0.1) and its own
daemon (a temporary config, socket and pidfile), sends ``-n`` requests (default 100 000) in rounds, and
reports for the master and each worker: RSS, open file descriptors, and /dev/shm usage, at the start (after
a warm-up round) and at the end. Exit status 1 if any of them grew beyond a small tolerance.

    python tools/soak.py                 # 100 000 requests
    python tools/soak.py -n 20000 --json soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shmfetch import Client  # noqa: E402
from shmfetch.ipc import names  # noqa: E402
from shmfetch.testing.daemon import Daemon, write_config  # noqa: E402
from shmfetch.testing.origin import OriginProcess  # noqa: E402


def _proc_figures(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return {"rss_kib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def _shm_bytes(pid: int) -> int:
    return sum(os.path.getsize(os.path.join(names.SHM_DIR, e)) for e in names.owned_by(pid))


def snapshot(c: Client) -> dict:
    st = c.stats()
    snap = {"master": _proc_figures(st["pid"]), "workers": {}, "shm_bytes": _shm_bytes(st["pid"])}
    for w in st["workers"]:
        snap["workers"][w["index"]] = {"pid": w["pid"], **_proc_figures(w["pid"])}
    snap["shm_objects"] = len(names.owned_by(st["pid"]))
    return snap


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="requests in all (default 100000)")
    ap.add_argument("-c", "--concurrency", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args()

    origin = OriginProcess(pages=0)
    tmp = Path(tempfile.mkdtemp(prefix="shmfetch-soak-"))
    daemon_conf = {"workers": args.workers, "threads": 16, "socket": tmp / "s.sock", "pidfile": tmp / "s.pid"}
    cfg = write_config(tmp, daemon={**daemon_conf, "max_pending": 100000}, fetch={"timeout": 10})
    report: dict = {"requests": args.n}
    try:
        daemon = Daemon(cfg, tmp / "s.sock", workers=args.workers, ready_timeout=30)
    except (RuntimeError, TimeoutError) as e:
        origin.close()
        raise SystemExit(f"daemon did not start: {e}") from None
    try:
        # 5000 distinct pages of about 4 KB: a table and some paragraphs each
        urls = (origin.url(f"/page?size=4000&title=soak%20{i % 5000}") for i in range(args.n))
        warm = 2000
        ok = fail = 0
        t0 = time.monotonic()
        with Client(str(tmp / "s.sock")) as c:
            for i, r in enumerate(c.fetch_many(urls, concurrency=args.concurrency)):
                ok += r.ok
                fail += not r.ok
                if i + 1 == warm:
                    report["start"] = snapshot(c)
                if (i + 1) % 10_000 == 0:
                    print(f"{i + 1} done, {(i + 1) / (time.monotonic() - t0):.0f} pages/s", file=sys.stderr)
            report["end"] = snapshot(c)
        report.update(ok=ok, failed=fail, seconds=round(time.monotonic() - t0, 1))
    finally:
        _, out = daemon.stop(timeout=60)
        origin.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report["final_line"] = out.strip().splitlines()[-1] if out.strip() else ""
    report["shm_left"] = names.owned_by(daemon.pid)

    s, e = report["start"], report["end"]
    grew = []
    print(f"{'process':<10} {'RSS start':>10} {'RSS end':>10} {'fds start':>9} {'fds end':>8}")
    rows = [("master", s["master"], e["master"])] + [
        (f"worker {i}", s["workers"][i], e["workers"][i]) for i in s["workers"]
    ]
    for name, a, b in rows:
        print(f"{name:<10} {a['rss_kib']:>8}Ki {b['rss_kib']:>8}Ki {a['fds']:>9} {b['fds']:>8}")
        # 10 % or 4 MiB of RSS slack for allocator noise; descriptors must not grow at all
        if b["rss_kib"] > max(a["rss_kib"] * 1.10, a["rss_kib"] + 4096) or b["fds"] > a["fds"]:
            grew.append(name)
    print(
        f"/dev/shm   {s['shm_bytes']} B in {s['shm_objects']} objects -> {e['shm_bytes']} B in {e['shm_objects']} objects"
    )
    if e["shm_bytes"] > s["shm_bytes"] or e["shm_objects"] > s["shm_objects"]:
        grew.append("shm")
    print(
        f"{report['ok']} ok, {report['failed']} failed in {report['seconds']} s; daemon said: {report['final_line']}"
    )
    print(f"left in /dev/shm after exit: {report['shm_left'] or 'nothing'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if grew or report["shm_left"] or report["final_line"] != f"downloaded {ok} URLs":
        print(f"FAIL: grew: {grew}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
