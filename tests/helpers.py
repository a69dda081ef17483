"""Test scaffolding: a real daemon in a subprocess, and a small HTTP origin on 127.0.0.1.

Nothing here is mocked: the daemon is ``python -m shmfetch serve`` with its own config, socket, pidfile,
shared memory and worker processes; the origin is a real threaded HTTP server on a loopback port.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from shmfetch import names

REPO = Path(__file__).resolve().parent.parent


def page_text(i: int) -> str:
    return f"Page {i}\nThis is page number {i}."


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, ctype: str = "text/html; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        parts = u.path.strip("/").split("/")
        if parts[0] == "page":
            i = int(parts[1])
            body = f"<html><head><script>x()</script><style>p{{}}</style></head><body><h1>Page {i}</h1><p>This is page number {i}.</p></body></html>"
            self._send(200, body.encode())
        elif parts[0] == "status":
            self._send(int(parts[1]), f"<p>status {parts[1]}</p>".encode())
        elif parts[0] == "text":
            n = int(q.get("bytes", "1024"))
            line = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 3)[:99] + b"\n"
            body = (line * (n // len(line) + 1))[:n]
            self._send(200, body, "text/plain; charset=utf-8")
        elif parts[0] == "slow":
            time.sleep(float(q.get("s", "1")))
            self._send(200, b"<p>slow</p>")
        else:
            self._send(404, b"<p>not found</p>")


class Origin:
    """A threaded HTTP origin on 127.0.0.1 with a few routes: /page/N, /status/CODE, /text?bytes=N, /slow?s=S."""

    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None  # killed workers reset connections
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_config(tmp: Path, **sections: dict[str, object]) -> Path:
    """A config in ``tmp`` with its own socket and pidfile; ``sections`` override keys."""
    base: dict[str, dict[str, object]] = {
        "daemon": {
            "workers": 2,
            "threads": 4,
            "socket": tmp / "shmfetch.sock",
            "pidfile": tmp / "shmfetch.pid",
            "drain_timeout": 5,
        },
        "fetch": {"timeout": 5},
        "security": {"allow_networks": "127.0.0.1/32"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) for s, kv in base.items())
    path = tmp / "config.ini"
    path.write_text(text)
    return path


class Daemon:
    """``shmfetch serve`` in a subprocess. ``stop()`` sends SIGUSR1 and returns (exit code, stdout)."""

    def __init__(self, config: Path, socket_path: Path, wait: bool = True):
        self.config = config
        self.socket = str(socket_path)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shmfetch", "serve", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.stdout = ""
        self.stderr = ""
        if wait:
            self.wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise RuntimeError(f"daemon exited early ({self.proc.returncode}): {err}")
            if os.path.exists(self.socket) and self.worker_pids():
                if all(_is_running_worker(p) for p in self.worker_pids()):
                    return
            time.sleep(0.05)
        raise TimeoutError("daemon did not become ready")

    def worker_pids(self) -> list[int]:
        try:
            out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        except FileNotFoundError:
            return _children(self.pid)
        return [int(x) for x in out.split()]

    def stop(self, sig: int = signal.SIGUSR1, timeout: float = 30.0) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.proc.returncode, self.stdout

    def kill(self) -> None:
        """Last resort for a failing test: kill the daemon and its workers, and unlink its objects."""
        pids = self.worker_pids()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.stdout, self.stderr = self.proc.communicate(timeout=10)
        for entry in names.owned_by(self.pid):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(names.SHM_DIR, entry))

    def last_line(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _is_running_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"shmfetch.worker" in fh.read()
    except OSError:
        return False


@contextlib.contextmanager
def running_daemon(tmp: Path, **sections: dict[str, object]) -> Iterator[Daemon]:
    """A daemon for the duration of a ``with``; stopped (or killed) on the way out, whatever happens."""
    cfg = write_config(tmp, **sections)
    d = Daemon(
        cfg,
        tmp / "shmfetch.sock" if "socket" not in sections.get("daemon", {}) else sections["daemon"]["socket"],
    )
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            try:
                d.stop()
            except subprocess.TimeoutExpired:
                pass
        if d.proc.poll() is None:
            d.kill()
