"""The counter lock (fcntl, released by the kernel when its holder dies) and the journal that undoes an
increment cut short: a process killed at any instant of an increment leaves the count exact."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from shmfetch.ipc import faults
from shmfetch.ipc.control import S_COUNTED, Control

from .helpers import fork_child

_n = iter(range(1_000_000))


@pytest.fixture
def ctl():
    c = Control.create(f"/shmfetch.{os.getpid()}.ctltest{next(_n)}", 4)
    yield c
    c.close()
    c.unlink()




def _incrementer(name: str, index: int, committed_fd: int) -> None:
    """Child: 'commit' a result (a byte down a pipe, as a result goes into the ring), then count it."""
    c = Control.attach(name)
    while True:
        os.write(committed_fd, b"x")
        c.increment(index)


def _drain(fd: int) -> int:
    n = 0
    while chunk := os.read(fd, 1 << 16):
        n += len(chunk)
    os.close(fd)
    return n


def test_single_process_increments(ctl):
    for _ in range(10):
        ctl.increment(1)
    assert ctl.counter == 10 and ctl.slot(1, S_COUNTED) == 10 and ctl.slot(0, S_COUNTED) == 0
    with ctl.locked(blocking=False) as got:
        assert got


def test_the_lock_excludes_other_processes_and_dies_with_its_holder(ctl):
    r, w = os.pipe()

    def hold(name: str) -> None:
        c = Control.attach(name)
        with c.locked():
            os.write(w, b"held")
            time.sleep(30)

    pid = fork_child(hold, ctl.name)
    try:
        assert os.read(r, 4) == b"held"
        with ctl.locked(blocking=False) as got:
            assert not got
        assert ctl.reconcile(0, 0, blocking=False) is None
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    with ctl.locked(blocking=False) as got:  # the kernel released it: nobody repaired anything
        assert got


@pytest.mark.parametrize("point", ["counter.after_lock", "counter.in_critical"])
def test_an_increment_cut_short_is_undone_by_the_next_taker(ctl, point, tmp_path, monkeypatch):
    for _ in range(5):
        ctl.increment(1)

    def die_at_point(name: str) -> None:
        monkeypatch.setenv(faults.ENV, f"{point}:1:{tmp_path / 'fired'}")
        faults.arm_from_env()
        Control.attach(name).increment(1)

    pid = fork_child(die_at_point, ctl.name)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert (tmp_path / "fired").exists()
    ctl.increment(0)  # takes the lock the kernel freed, and rolls the dead increment back first
    assert ctl.counter == 6 and ctl.slot(1, S_COUNTED) == 5 and ctl.slot(0, S_COUNTED) == 1
    assert ctl.reconcile(1, 6) == 1  # the master counts the result the dead process had committed
    assert ctl.counter == 7


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_concurrent_incrementers_killed_at_random_count_exactly(ctl, seed):
    """N processes increment at once; one of them is SIGKILLed at a random instant every few ms and its
    slot refilled, as the master does. The counter ends equal to the increments that were committed."""
    rnd = random.Random(seed)
    nslots = 4
    procs: dict[int, tuple[int, int]] = {}  # slot -> (pid, read end of its commit pipe)
    committed = 0

    def start(slot: int) -> None:
        r, w = os.pipe()
        pid = fork_child(_incrementer, ctl.name, slot, w)
        os.close(w)
        procs[slot] = (pid, r)

    def bury(slot: int) -> None:
        nonlocal committed
        pid, r = procs.pop(slot)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        got = _drain(r)
        committed += got
        ctl.reconcile(slot, got)
        ctl.init_slot(slot, 0, 0)  # the next process in the slot starts its own tally

    for slot in range(nslots):
        start(slot)
    kills = 0
    deadline = time.monotonic() + 15.0
    try:
        while kills < 40 and time.monotonic() < deadline:
            time.sleep(rnd.uniform(0.002, 0.03))
            slot = rnd.randrange(nslots)
            bury(slot)
            kills += 1
            start(slot)
    finally:
        for slot in list(procs):
            bury(slot)
    assert kills >= 10 and committed > kills
    assert ctl.counter == committed
