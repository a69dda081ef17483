"""The end-to-end demo: serve tools/demo_site on 127.0.0.1, start the daemon with config.ini, submit the
site's URLs, show one page's text, stop the daemon with SIGUSR1 and show the count it prints.

The daemon runs with config.ini's settings but its own socket and pidfile in a temporary directory, so
the demo works while another shmfetch (say, one started with config.ini) runs on the machine.

Run from the repository root, with shmfetch installed:  python tools/demo.py
"""

from __future__ import annotations

import configparser
import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "tools" / "demo_site"
CONFIG = ROOT / "config.ini"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from shmfetch import config

    tmp = tempfile.TemporaryDirectory(prefix="shmfetch-demo.")
    conf = _private_config(Path(tmp.name))
    cfg = config.load(conf)
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    urls = [f"{base}/{p.name}" for p in sorted(SITE.glob("*.html"))] + [f"{base}/missing.html"]
    print(f"demo site on {base}: {len(urls)} URLs (one of them a 404)")

    print(f"$ shmfetch serve -c {conf}   (config.ini with a private socket and pidfile)")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "shmfetch", "serve", "-c", str(conf)], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(cfg.daemon.socket):
            if daemon.poll() is not None or time.monotonic() > deadline:
                print(f"shmfetch serve did not start (exit {daemon.poll()})", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(f"$ shmfetch submit -c {conf.name} --json URL...   (daemon pid {daemon.pid})")
        out = subprocess.run(
            [sys.executable, "-m", "shmfetch", "submit", "-c", str(conf), "--json", *urls],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for line in out.stdout.splitlines():
            r = json.loads(line)
            print(
                f"  worker {r['worker']}  {'ok ' if r['ok'] else 'ERR'} {r['status']}  {r['url']}  {r['error'] or ''}"
            )
        print(f"submit exit code: {out.returncode} (1 = some URLs failed)")
        print(f"\n$ shmfetch submit -c {conf.name} {base}/article.html")
        one = subprocess.run(
            [sys.executable, "-m", "shmfetch", "submit", "-c", str(conf), f"{base}/article.html"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        print(one.stdout)
        print(f"$ kill -USR1 {daemon.pid}")
        daemon.send_signal(signal.SIGUSR1)
        stdout, _ = daemon.communicate(timeout=60)
        lines = stdout.strip().splitlines()
        print(f"daemon exit code {daemon.returncode}; last line of its stdout:")
        print(lines[-1] if lines else "(none)")
        return 0 if daemon.returncode == 0 and out.returncode == 1 else 1
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        httpd.shutdown()
        httpd.server_close()
        tmp.cleanup()


def _private_config(directory: Path) -> Path:
    """config.ini, with the socket and pidfile moved into ``directory``."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(CONFIG)
    cp["daemon"]["socket"] = str(directory / "shmfetch.sock")
    cp["daemon"]["pidfile"] = str(directory / "shmfetch.pid")
    path = directory / "demo.ini"
    with path.open("w") as fh:
        cp.write(fh)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
