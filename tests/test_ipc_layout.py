"""The shared-memory layout as docs/RING.md specifies it: whole-word access to the control segment, the
geometry a ring must have before anyone attaches it, the machines the Python ring is specified for, and
segments of the C ring allocated in full when they are created."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shmfetch.ipc.control import Control

_n = iter(range(1_000_000))
NATIVE = Path(__file__).resolve().parent.parent / "native_bench"


def _name(kind: str) -> str:
    return f"/shmfetch.{os.getpid()}.layout{next(_n)}.{kind}"


# -- the counter is read whole while workers write it ---------------------------------------------------


def _count_forever(name: str) -> None:
    c = Control.attach(name)
    while True:
        c.increment(0)


def test_a_reader_never_sees_the_counter_go_backwards_while_workers_increment_it():
    """``stats``, ``/metrics`` and SIGUSR1 read the counter without its lock while workers write it; a torn
    read (a store seen half done) looks like a drop to 0, which Prometheus takes for a counter reset."""
    ctl = Control.create(_name("ctl"), 2)
    writers = []
    try:
        for _ in range(2):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                try:
                    _count_forever(ctl.name)
                finally:
                    os._exit(0)
            writers.append(pid)
        drops, reads, last = [], 0, 0
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and len(drops) < 5:
            for _ in range(1000):
                now = ctl.counter
                if now < last:
                    drops.append((last, now))
                last = now
            reads += 1000
        assert last > 1000, f"the writers made only {last} increments: the test proved nothing"
        assert not drops, f"the counter went backwards {len(drops)} time(s) in {reads} reads: {drops}"
    finally:
        for pid in writers:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        ctl.close()
        ctl.unlink()


# -- the C ring allocates its segments in full ----------------------------------------------------------


def _private_small_shm_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a private mount namespace with a small tmpfs on /dev/shm"
    p = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /dev/shm"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return None if p.returncode == 0 else f"cannot mount a private tmpfs here: {p.stderr.strip()}"


@pytest.fixture(scope="module")
def interop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("native_build")
    proc = subprocess.run(
        ["make", "-C", str(NATIVE), f"BUILD={build}"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"make failed:\n{proc.stdout}\n{proc.stderr}"
    return build / "interop"


@pytest.mark.skipif(bool(_private_small_shm_reason()), reason=_private_small_shm_reason() or "")
def test_the_c_ring_on_a_full_dev_shm_fails_its_create_instead_of_dying_of_sigbus(interop):
    """ring.h created segments with ftruncate only: the first write to a page /dev/shm could not back was a
    SIGBUS, long after the create had succeeded. A 4 MiB ring on a 64 KiB /dev/shm must fail at once."""
    script = f"mount -t tmpfs -o size=64k tmpfs /dev/shm && exec {interop} create /shmfetch_itest.full 1024 4096"
    p = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, f"exit {p.returncode} (-7 or 135 is SIGBUS): {p.stderr}"
    assert "interop: create: No space left on device" in p.stderr


def test_the_c_ring_creates_and_fills_a_ring_that_fits(interop):
    name = f"/shmfetch_itest.{os.getpid()}.fits"
    p = subprocess.run([str(interop), "create", name, "64", "256"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(f"/dev/shm{name}")
