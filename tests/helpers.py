"""Test-only fixtures and probes on top of the shared harness (shmfetch/testing/).

The daemon, its config, the origin, free ports and redis-server live in shmfetch.testing, which the tools
use too; they are re-exported here so that test modules import everything from one place.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shmfetch import Client
from shmfetch.ipc import membarrier
from shmfetch.testing.daemon import Daemon, running_daemon, serve_argv, started_pids, write_config
from shmfetch.testing.net import free_port
from shmfetch.testing.origin import Origin, numbered_text, start_origin

__all__ = [
    "Origin", "page_text", "write_config", "Daemon", "running_daemon", "run_cli", "wait_for",
    "daemon_stats", "cpu_ticks", "proc_kib", "fetch_through_kill_storm", "serve_argv", "MEMBARRIER",
    "needs_membarrier", "started_pids", "free_port", "origin_fixture", "REPO", "wait_workers_ready",
    "http_api_daemon", "fork_child",
]  # fmt: skip

REPO = Path(__file__).resolve().parent.parent
# The content-mode evaluation pages (tools/make_eval_pages.py), served by the origin under /pages/.
PAGES_DIR = REPO / "tests" / "pages"

# The ring's membarrier fence mode as a test parameter (docs/RING.md, "Fences"): it needs Linux >= 4.16 on
# x86-64; where the kernel does not offer it the daemon runs fence mode, and the parameter is skipped.
needs_membarrier = pytest.mark.skipif(not membarrier.register(), reason="no membarrier GLOBAL_EXPEDITED here")
MEMBARRIER = pytest.param("membarrier", marks=needs_membarrier)


def page_text(i: int) -> str:
    """The text of the origin's ``/page/I``."""
    return numbered_text(i)


@pytest.fixture(scope="module", name="origin")
def origin_fixture() -> Iterator[Origin]:
    """Module-scoped fixture ``origin``: ``from .helpers import origin_fixture`` in a test module to use it
    (the suite-wide ``origin`` of conftest is session-scoped)."""
    with start_origin(pages_dir=PAGES_DIR) as o:
        yield o


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


def _connects(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def http_api_daemon(
    tmp_path: Path, env: dict[str, str] | None = None, security: dict[str, object] | None = None, **http: object
) -> Iterator[str]:
    """A daemon with the HTTP API on a free loopback port (``[http]`` keys as keywords); yields its base URL."""
    port = free_port()  # nothing listens on it until the daemon does
    sections: dict[str, dict[str, object]] = {"http": {"listen": f"127.0.0.1:{port}", **http}}
    if security:
        sections["security"] = security
    cfg = write_config(tmp_path, **sections)
    d = Daemon(cfg, tmp_path / "shmfetch.sock", env=env)
    try:
        wait_for(lambda: _connects(port), 20, "the HTTP port")
        yield f"http://127.0.0.1:{port}"
    finally:
        if d.proc.poll() is None:
            d.stop()


def fork_child(fn: Callable[..., object], *args: object) -> int:
    """``fn(*args)`` in a forked child that then exits at once (no pytest teardown in it); its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            fn(*args)
        finally:
            os._exit(0)
    return pid
