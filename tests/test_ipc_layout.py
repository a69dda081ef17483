"""The shared-memory layout as docs/RING.md specifies it: whole-word access to the control segment, the
geometry a ring must have before anyone attaches it, the machines the Python ring is specified for, and
segments of the C ring allocated in full when they are created."""

from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import posix_ipc
import pytest

from shmfetch.ipc import ring as ring_mod
from shmfetch.ipc.control import Control
from shmfetch.ipc.ring import Ring, RingError

_n = iter(range(1_000_000))
NATIVE = Path(__file__).resolve().parent.parent / "native_bench"


def _name(kind: str) -> str:
    return f"/shmfetch.{os.getpid()}.layout{next(_n)}.{kind}"


# -- the counter is read whole while workers write it ---------------------------------------------------


def _count_forever(name: str) -> None:
    c = Control.attach(name)
    while True:
        c.increment(0)


@pytest.mark.slow
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


# -- a ring's geometry is checked before it is used -------------------------------------------------------


@pytest.mark.parametrize(
    "offset, value, says",
    [
        (16, 3, "nslots 3 is not a power of two"),
        (16, 1 << 20, "1048576 slots of 64 bytes do not fit in a segment of 768 bytes"),
        (12, 48, "slot_size 48 is not a power of two >= 64"),
        (12, 1 << 16, "8 slots of 65536 bytes do not fit"),
    ],
)
def test_attach_refuses_a_ring_whose_header_geometry_is_corrupt(offset, value, says):
    """Ring.__init__ took slot_size and nslots on trust: a corrupt header made it mask positions and read
    records outside the data area (ring.h's attach already refused these)."""
    r = Ring.create(_name("req"), 8, 64)
    try:
        shm = posix_ipc.SharedMemory(r.name)
        with mmap.mmap(shm.fd, shm.size) as mm:
            shm.close_fd()
            struct.pack_into("<I", mm, offset, value)
        with pytest.raises(RingError, match="corrupt ring header") as e:
            Ring.attach(r.name)
        assert says in str(e.value)
    finally:
        r.close()
        r.unlink()


def test_a_ring_with_a_sound_header_attaches():
    r = Ring.create(_name("req"), 8, 64)
    try:
        peer = Ring.attach(r.name)
        assert (peer.nslots, peer.slot_size) == (8, 64)
        peer.close()
    finally:
        r.close()
        r.unlink()


# -- the machines the Python ring runs on ---------------------------------------------------------------


@pytest.mark.parametrize("machine", ["aarch64", "armv7l", "ppc64le", "riscv64", "s390x"])
def test_machines_other_than_x86_64_are_refused_with_the_reason(machine):
    """Off x86-64 the daemon silently ran fence mode, whose fences do not order a store before a later
    load there: it must refuse to start instead, saying why."""
    why = ring_mod.unsupported_machine(machine)
    assert why is not None
    assert machine in why and "x86-64 only" in why and "docs/RING.md" in why


def test_x86_64_is_supported():
    assert ring_mod.unsupported_machine("x86_64") is None


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
