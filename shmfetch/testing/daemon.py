"""A real daemon in a subprocess, for tests and tools: one config writer, one start, one readiness check.

Nothing here is mocked: the daemon is ``python -m shmfetch serve`` with its own config, socket, pidfile,
shared memory and worker processes. ``Daemon`` is ready once its socket exists and its children are
running workers (as many as the caller expects, when it says); ``stop()`` sends SIGUSR1 and returns the exit
code and stdout, and kills whatever is left if the daemon does not stop in time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..ipc import names

# The directory holding the shmfetch package this process imported: the daemon runs with it as its working
# directory, so ``python -m shmfetch`` there runs the same code as the caller, installed or a checkout.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

# Pids of every process this harness started (daemons, CLI runs, redis-servers): the test suite's leftover
# check looks only at their shared objects.
started_pids: set[int] = set()


def write_config(tmp: Path, **sections: dict[str, object]) -> Path:
    """A config in ``tmp`` with its own socket and pidfile; ``sections`` override keys.

    The base is a small daemon for one loopback origin: 2 workers of 4 threads, 127.0.0.1 allowed, and no
    per-host cap (the origin is one host; whoever tests politeness sets its own)."""
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
        "politeness": {"per_host": 65536},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) for s, kv in base.items())
    path = tmp / "config.ini"
    path.write_text(text)
    return path


def serve_argv(config: Path) -> list[str]:
    """The daemon's own command line for ``config``."""
    return [sys.executable, "-m", "shmfetch", "serve", "-c", str(config)]


class Daemon:
    """``shmfetch serve`` in a subprocess. ``stop()`` sends SIGUSR1 and returns (exit code, stdout).

    ``argv`` replaces the command, for a daemon started through a wrapper that ``exec``s it (so that the
    pid is the daemon's): ``serve_argv(config)`` is the daemon's own command line. ``workers``: how many
    running workers make it ready (default: any, as long as every child is a worker).
    """

    def __init__(
        self,
        config: Path,
        socket_path: Path | str,
        wait: bool = True,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
        stderr_pipe: bool = False,
        workers: int | None = None,
        ready_timeout: float = 20.0,
    ):
        self.config = config
        self.socket = str(socket_path)
        self.workers = workers
        self._errfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv or serve_argv(config),
            stdout=subprocess.PIPE,
            # A file, not a pipe, unless a caller asks for one (that nobody reads until stop()): tests read
            # the daemon's log while it runs, and a long benchmark would fill a pipe.
            stderr=subprocess.PIPE if stderr_pipe else self._errfile,
            text=True,
            cwd=PACKAGE_ROOT,
            env=env,
        )
        started_pids.add(self.proc.pid)
        self.stdout = ""
        self._piped_err: str | None = None
        if wait:
            try:
                self.wait_ready(ready_timeout)
            except BaseException:
                # Still running but not ready: kill it, so that nothing outlives the caller. One that exited
                # is left as it is: what it left behind is for the caller's leftover check to see.
                if self.proc.poll() is None:
                    self.kill()
                raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Return once the socket exists and the children are running workers; raise if the daemon exits
        first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._collect(10)
                raise RuntimeError(f"daemon exited early ({self.proc.returncode}): {self.stderr}")
            if os.path.exists(self.socket) and self._workers_running():
                return
            time.sleep(0.05)
        raise TimeoutError("daemon did not become ready")

    def _workers_running(self) -> bool:
        pids = self.worker_pids()
        if not pids or (self.workers is not None and len(pids) < self.workers):
            return False
        return all(_is_running_worker(p) for p in pids)

    @property
    def stderr(self) -> str:
        """What the daemon wrote to stderr so far (read with pread: the daemon shares the file offset);
        with ``stderr_pipe``, what the pipe held when the daemon was stopped."""
        if self._piped_err is not None:
            return self._piped_err
        fd = self._errfile.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")

    def _collect(self, timeout: float) -> None:
        """Wait for the daemon's exit and read its stdout (and its stderr pipe, if it has one)."""
        self.stdout, err = self.proc.communicate(timeout=timeout)
        if err is not None:
            self._piped_err = err

    def worker_pids(self) -> list[int]:
        try:
            out = subprocess.run(
                ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, timeout=10
            ).stdout
        except FileNotFoundError:
            return _children(self.pid)
        return [int(x) for x in out.split()]

    def stop(self, sig: int = signal.SIGUSR1, timeout: float = 30.0) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self._collect(timeout)
        except subprocess.TimeoutExpired as e:
            self.kill()
            raise AssertionError(
                f"daemon {self.pid} did not exit within {timeout}s of {signal.Signals(sig).name}; "
                f"its stderr ends:\n{self.stderr[-4000:]}"
            ) from e
        return self.proc.returncode, self.stdout

    def kill(self) -> None:
        """Last resort: kill the daemon and its workers, and unlink its objects."""
        pids = self.worker_pids()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self._collect(10)
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
    socket_path = sections.get("daemon", {}).get("socket", tmp / "shmfetch.sock")
    d = Daemon(cfg, socket_path)
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            d.stop()  # kills the daemon, then raises, if it does not stop in time
