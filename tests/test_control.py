"""The counter lock and its repair: a process killed at any instant of an increment leaves the count exact."""

from __future__ import annotations

import os
import random
import signal
import struct
import time

import pytest

from shmfetch.control import Control

_n = iter(range(1_000_000))


@pytest.fixture
def ctl():
    c = Control.create(f"/shmfetch.{os.getpid()}.ctltest{next(_n)}", 2)
    yield c
    c.close()
    c.unlink()


def _incrementer(name: str, index: int, committed_fd: int) -> None:
    """Child: 'commit' a result (a byte down a pipe, as a result goes into the ring), then count it."""
    c = Control.attach(name)
    while True:
        os.write(committed_fd, b"x")
        c.increment(index)


def test_single_process_increments(ctl):
    for _ in range(10):
        ctl.increment(1)
    assert ctl.counter == 10 and ctl.slot(1, 8) == 10 and ctl.slot(0, 8) == 0
    assert ctl.lock.value == 1


@pytest.mark.parametrize("seed", range(12))
def test_sigkill_at_a_random_instant_is_repaired_and_reconciled_exactly(ctl, seed):
    rnd = random.Random(seed)
    base = ctl.counter
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            _incrementer(ctl.name, 0, w)
        finally:
            os._exit(0)
    os.close(w)
    time.sleep(rnd.uniform(0.01, 0.15))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    committed = 0
    while chunk := os.read(r, 1 << 16):
        committed += len(chunk)
    os.close(r)
    # the master's repair sequence: lock first, then reconcile against what it received
    ctl.repair_after(pid, stuck_timeout=0.2)
    assert ctl.lock.value == 1, "lock left taken"
    ctl.reconcile(0, committed)
    assert ctl.counter - base == committed
    assert ctl.slot(0, 8) == committed
    ctl.init_slot(0, 0, 2)  # the next generation starts its own tally


def test_death_inside_the_critical_section_is_undone(ctl):
    """Force the worst instant: holder recorded, journal valid, counter bumped, own tally not yet."""
    for _ in range(5):
        ctl.increment(1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        c = Control.attach(ctl.name)
        c.lock.acquire()
        mm = c._mm
        struct.pack_into("<I", mm, 72, os.getpid())  # holder
        struct.pack_into("<QIxxxxQ", mm, 80, 5, 1, 5)  # journal: counter 5, worker 1, counted 5
        struct.pack_into("<I", mm, 76, 1)  # journal valid
        struct.pack_into("<Q", mm, 64, 6)  # counter bumped...
        os.kill(os.getpid(), signal.SIGKILL)  # ...and dead before its own tally
    os.waitpid(pid, 0)
    assert ctl.lock.value == 0
    assert ctl.repair_after(pid)
    assert ctl.counter == 5 and ctl.slot(1, 8) == 5 and ctl.lock.value == 1
    assert ctl.reconcile(1, 6) == 1  # the result it had committed is counted once
    assert ctl.counter == 6


def test_death_between_sem_wait_and_recording_the_holder(ctl):
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        c = Control.attach(ctl.name)
        c.lock.acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert ctl.lock.value == 0
    assert ctl.repair_after(pid, stuck_timeout=0.2)
    assert ctl.lock.value == 1
    ctl.increment(0)
    assert ctl.counter == 1
