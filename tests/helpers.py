"""Test scaffolding: a real daemon in a subprocess (the HTTP origin lives in tests/origin.py).

Nothing here is mocked: the daemon is ``python -m shmfetch serve`` with its own config, socket, pidfile,
shared memory and worker processes.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shmfetch import Client
from shmfetch.ipc import membarrier, names

from .origin import Origin, numbered_text

__all__ = [
    "Origin", "page_text", "write_config", "Daemon", "running_daemon", "run_cli", "wait_for",
    "daemon_stats", "cpu_ticks", "proc_kib", "fetch_through_kill_storm", "serve_argv", "MEMBARRIER",
    "needs_membarrier", "wait_workers_ready",
]  # fmt: skip

REPO = Path(__file__).resolve().parent.parent

# The ring's membarrier fence mode as a test parameter (docs/RING.md, "Fences"): it needs Linux >= 4.16 on
# x86-64; where the kernel does not offer it the daemon runs fence mode, and the parameter is skipped.
needs_membarrier = pytest.mark.skipif(not membarrier.register(), reason="no membarrier GLOBAL_EXPEDITED here")
MEMBARRIER = pytest.param("membarrier", marks=needs_membarrier)

# Pids of every shmfetch process a test started (conftest's leftover check looks only at their objects).
started_pids: set[int] = set()


def page_text(i: int) -> str:
    """The text of the origin's ``/page/I``."""
    return numbered_text(i)


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
        # The suite's origin is one host; tests not about politeness run without a per-host cap, as they
        # did before it existed (tests/test_politeness.py sets its own).
        "politeness": {"per_host": 65536},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) for s, kv in base.items())
    path = tmp / "config.ini"
    path.write_text(text)
    return path


class Daemon:
    """``shmfetch serve`` in a subprocess. ``stop()`` sends SIGUSR1 and returns (exit code, stdout).

    ``argv`` replaces the command, for a daemon started through a wrapper that ``exec``s it (so that the
    pid is the daemon's): ``serve_argv(config)`` is the daemon's own command line.
    """

    def __init__(
        self,
        config: Path,
        socket_path: Path,
        wait: bool = True,
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
        stderr_pipe: bool = False,
    ):
        self.config = config
        self.socket = str(socket_path)
        self._errfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv or serve_argv(config),
            stdout=subprocess.PIPE,
            # A file, not a pipe, unless a test asks for one (that nobody reads until stop()): the tests
            # read the daemon's log while it runs.
            stderr=subprocess.PIPE if stderr_pipe else self._errfile,
            text=True,
            cwd=REPO,
            env=env,
        )
        started_pids.add(self.proc.pid)
        self.stdout = ""
        self._piped_err: str | None = None
        if wait:
            self.wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._collect(10)
                raise RuntimeError(f"daemon exited early ({self.proc.returncode}): {self.stderr}")
            if os.path.exists(self.socket) and self.worker_pids():
                if all(_is_running_worker(p) for p in self.worker_pids()):
                    return
            time.sleep(0.05)
        raise TimeoutError("daemon did not become ready")

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
        """Last resort for a failing test: kill the daemon and its workers, and unlink its objects."""
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


def serve_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "shmfetch", "serve", "-c", str(config)]


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
            d.stop()  # kills the daemon, then fails the test, if it does not stop in time


def run_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess:
    """``python -m shmfetch ARGS`` run to its end (``serve`` only where it is expected to exit by itself)."""
    argv = [sys.executable, "-m", "shmfetch", *args]
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    ) as proc:
        started_pids.add(proc.pid)
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def wait_for(
    pred: Callable[[], object], timeout: float = 10.0, what: str = "condition", step: float = 0.05
) -> object:
    """Poll ``pred`` every ``step`` s until it returns something true (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def daemon_stats(socket_path: str) -> dict:
    with Client(socket_path) as c:
        return c.stats()


def wait_workers_ready(socket_path: str, timeout: float = 60.0) -> None:
    """Until every worker has booted. The master hands a worker one request per free fetch thread, so a
    worker still booting is skipped once its first ``threads`` requests wait for it: a test of how requests
    are split starts here."""
    wait_for(lambda: all(w["ready"] for w in daemon_stats(socket_path)["workers"]), timeout, "every worker ready")


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid``, in clock ticks, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_kib(pid: int | str, field: str) -> int:
    """A KiB figure (``VmRSS``, ``VmHWM``) from /proc/PID/status; ``pid`` may be ``"self"``."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def fetch_through_kill_storm(
    d: Daemon,
    urls: list[str],
    every: float,
    choose: Callable[[dict], bool],
    most: int | None = None,
    seed: int = 7,
) -> tuple[list, list[int]]:
    """Fetch ``urls`` (96 in flight) while, every ``every`` s, a random live worker whose ``stats``
    entry ``choose`` accepts is SIGKILLed (``most`` kills at most). Returns (results, killed pids)."""
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_workers, args=(d, stop, every, killed, choose, most, seed))
    killer.start()
    try:
        with Client(d.socket, timeout=120) as c:
            return list(c.fetch_many(urls, concurrency=96)), killed
    finally:
        stop.set()
        killer.join(10)


def _kill_workers(
    d: Daemon,
    stop: threading.Event,
    every: float,
    killed: list[int],
    choose: Callable[[dict], bool],
    most: int | None,
    seed: int,
) -> None:
    """The storm's thread: until ``stop``, or ``most`` kills, one kill every ``every`` s."""
    rnd = random.Random(seed)
    while (most is None or len(killed) < most) and not stop.wait(every):
        try:
            with Client(d.socket, timeout=5) as c:
                workers = c.stats()["workers"]
        except OSError:
            continue
        pids = [w["pid"] for w in workers if w["alive"] and choose(w)]
        if pids:
            victim = rnd.choice(pids)
            try:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            except ProcessLookupError:
                pass
