"""The end-to-end demo: serve tools/demo_site on 127.0.0.1 (the test origin, shmfetch/testing/origin.py),
start the daemon with config.ini, submit the site's URLs, show one page's text, stop the daemon with SIGUSR1
and show the count it prints.

The daemon runs with config.ini's settings but its own socket and pidfile in a temporary directory, so
the demo works while another shmfetch (say, one started with config.ini) runs on the machine.

Run from the repository root, with shmfetch installed:  python tools/demo.py
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "tools" / "demo_site"
CONFIG = ROOT / "config.ini"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from shmfetch.testing.daemon import Daemon
    from shmfetch.testing.origin import start_origin

    with tempfile.TemporaryDirectory(prefix="shmfetch-demo.") as tmp, start_origin(pages_dir=SITE) as site:
        conf = _private_config(Path(tmp))
        urls = [site.url(f"/pages/{p.name}") for p in sorted(SITE.glob("*.html"))]
        urls.append(site.url("/pages/missing.html"))
        print(f"demo site on {site.url('/pages/')}: {len(urls)} URLs (one of them a 404)")
        print(f"$ shmfetch serve -c {conf}   (config.ini with a private socket and pidfile)")
        try:
            daemon = Daemon(conf, Path(tmp) / "shmfetch.sock", ready_timeout=30)
        except (RuntimeError, TimeoutError) as e:
            print(f"shmfetch serve did not start: {e}", file=sys.stderr)
            return 1
        try:
            submitted = _submit(conf, daemon.pid, urls, site.url("/pages/article.html"))
        finally:
            print(f"$ kill -USR1 {daemon.pid}")
            code, stdout = daemon.stop(timeout=60)
        lines = stdout.strip().splitlines()
        print(f"daemon exit code {code}; last line of its stdout:")
        print(lines[-1] if lines else "(none)")
        return 0 if code == 0 and submitted == 1 else 1


def _submit(conf: Path, pid: int, urls: list[str], article: str) -> int:
    """Submit every URL (one line each), then show one page's text; returns the first submit's exit code."""
    print(f"$ shmfetch submit -c {conf.name} --json URL...   (daemon pid {pid})")
    out = _cli("submit", "-c", str(conf), "--json", *urls)
    for line in out.stdout.splitlines():
        r = json.loads(line)
        print(f"  worker {r['worker']}  {'ok ' if r['ok'] else 'ERR'} {r['status']}  {r['url']}  {r['error'] or ''}")
    print(f"submit exit code: {out.returncode} (1 = some URLs failed)")
    print(f"\n$ shmfetch submit -c {conf.name} {article}")
    print(_cli("submit", "-c", str(conf), article).stdout)
    return out.returncode


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shmfetch", *args], capture_output=True, text=True, timeout=60)


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


if __name__ == "__main__":
    sys.exit(main())
