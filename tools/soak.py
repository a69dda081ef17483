"""Soak: push many requests through a real daemon and check that nothing grows.

Starts its own origin (a keep-alive HTTP/1.1 server in a separate process, on 127.0.0.1) and its own
daemon (a temporary config, socket and pidfile), sends ``-n`` requests (default 100 000) in rounds, and
reports for the master and each worker: RSS, open file descriptors, and /dev/shm usage, at the start (after
a warm-up round) and at the end. Exit status 1 if any of them grew beyond a small tolerance.

    python tools/soak.py                 # 100 000 requests
    python tools/soak.py -n 20000 --json soak.json
"""

from __future__ import annotations

import argparse
import http.server
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shmfetch import Client  # noqa: E402
from shmfetch.ipc import names  # noqa: E402


class _Page(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        i = int(self.path.rsplit("/", 1)[-1] or 0)
        rows = "".join(f"<tr><td>{i}</td><td>row {r} &amp; more</td></tr>" for r in range(40))
        body = (
            f"<html><head><title>soak {i}</title><script>var a={i};</script></head><body>"
            f"<h1>Soak page {i}</h1><table>{rows}</table><p>{'word ' * 300}</p></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(port_q: mp.Queue) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    httpd.daemon_threads = True
    port_q.put(httpd.server_address[1])
    httpd.serve_forever()


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

    port_q: mp.Queue = mp.get_context("spawn").Queue()
    origin = mp.get_context("spawn").Process(target=_serve, args=(port_q,), daemon=True)
    origin.start()
    port = port_q.get(timeout=30)
    tmp = Path(tempfile.mkdtemp(prefix="shmfetch-soak-"))
    cfg = tmp / "config.ini"
    cfg.write_text(
        f"[daemon]\nworkers = {args.workers}\nthreads = 16\nsocket = {tmp}/s.sock\npidfile = {tmp}/s.pid\n"
        "max_pending = 100000\n[security]\nallow_networks = 127.0.0.1/32\n"
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "shmfetch", "serve", "-c", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    report: dict = {"requests": args.n}
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(tmp / "s.sock"):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("daemon did not start")
            time.sleep(0.05)
        urls = (f"http://127.0.0.1:{port}/{i % 5000}" for i in range(args.n))
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
        daemon.send_signal(signal.SIGUSR1)
        out, _ = daemon.communicate(timeout=60)
        origin.terminate()
        origin.join(10)
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
