"""The ring on its own: layout invariants, wrap-around, fragments, full and empty, close, two processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time

import msgpack
import posix_ipc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shmfetch.ipc import faults, membarrier
from shmfetch.ipc.ring import HEADER_SIZE, REC_HDR, Ring, RingClosed

from .helpers import MEMBARRIER, REPO, cpu_ticks, needs_membarrier
from .ring_peer import index_of, message

_n = iter(range(1_000_000))


def _name() -> str:
    return f"/shmfetch.{os.getpid()}.test{next(_n)}"


BARRIERS = [MEMBARRIER, "fence"]  # docs/RING.md, "Fences": each ring runs one mode, fixed at creation


@pytest.fixture(params=BARRIERS)
def ring(request):
    r = Ring.create(_name(), 8, 64, barrier=request.param)
    c = Ring.attach(r.name)
    yield r, c
    c.close()
    r.close()
    r.unlink()


def test_objects_are_private_and_named_for_the_creator():
    r = Ring.create(_name(), 4, 64)
    try:
        assert str(os.getpid()) in r.name
        for f in (r.name[1:], "sem." + r.name[1:] + ".free", "sem." + r.name[1:] + ".fill"):
            mode = os.stat(os.path.join("/dev/shm", f)).st_mode
            assert stat.S_IMODE(mode) == 0o600, f
        assert os.path.getsize(os.path.join("/dev/shm", r.name[1:])) == HEADER_SIZE + 4 * 64
    finally:
        r.close()
        r.unlink()


@pytest.mark.parametrize("size", [0, 1, 56, 57, 64, 100, 119, 120, 121, 500, 4096, 100_000])
def test_sizes_from_empty_to_larger_than_the_ring(ring, size):
    prod, cons = ring
    payload = os.urandom(size)
    # A message larger than the ring needs the consumer running while the producer writes.
    t = threading.Thread(target=prod.put, args=(payload,), kwargs={"timeout": 10})
    t.start()
    assert cons.get(timeout=10) == payload
    t.join(5)
    assert not t.is_alive()


def test_wrap_around_keeps_every_record(ring):
    prod, cons = ring
    # 8 slots of 64 bytes: sizes chosen so records straddle the end of the data area many times.
    for i in range(500):
        payload = bytes([i % 256]) * (i * 7 % 180)
        prod.put(payload, timeout=10)
        assert cons.get(timeout=10) == payload
    head, tail = prod.positions()
    assert head == tail and head > 8 * 20


def test_full_ring_blocks_the_producer_and_empty_ring_blocks_the_consumer(ring):
    prod, cons = ring
    with pytest.raises(posix_ipc.BusyError):
        cons.get(timeout=0)
    for i in range(8):  # 8 one-slot records fill 8 slots
        prod.put(bytes([i]) * (64 - REC_HDR.size), timeout=10)
    with pytest.raises(posix_ipc.BusyError):
        prod.put(b"x", timeout=0.05)
    assert cons.get(timeout=10) == bytes([0]) * 56
    prod.put(b"x", timeout=0.05)  # one slot freed: fits now
    got = [cons.get(timeout=10) for _ in range(8)]
    assert got[-1] == b"x"
    with pytest.raises(posix_ipc.BusyError):
        cons.get(timeout=0.01)


def test_close_wakes_the_consumer_after_it_drained(ring):
    prod, cons = ring
    prod.put(b"last", timeout=10)
    prod.close_wake()
    assert cons.get(timeout=10) == b"last"
    with pytest.raises(RingClosed):
        cons.get(timeout=10)
    assert cons.closed


def test_get_many_takes_what_is_there_and_does_not_wait_for_more(ring):
    prod, cons = ring
    big = bytes(range(256)) + b"x" * 44  # 300 bytes: three fragments in this 8 x 64 B ring
    prod.put(b"one", timeout=10)
    prod.put(big, timeout=10)
    got: list = []
    t = threading.Thread(target=lambda: got.append(cons.get_many(bytes, 64, timeout=10)))
    t.start()
    t.join(5)
    blocked = t.is_alive()
    prod.put(b"late", timeout=10)  # frees a get_many that waits for more than was there
    t.join(5)
    # Counting semaphore posts would have asked for three messages here: fragments are posted one by one.
    assert not blocked, "get_many waited for messages that were not there"
    assert got == [[b"one", big]]
    prod.close_wake()
    assert cons.get_many(bytes, 64, timeout=10) == [b"late"]
    with pytest.raises(RingClosed):
        cons.get_many(bytes, 64, timeout=10)


def test_blocked_consumer_is_woken_by_close(ring):
    prod, cons = ring
    out = []

    def consume():
        try:
            cons.get(timeout=10)
        except RingClosed:
            out.append("closed")

    t = threading.Thread(target=consume)
    t.start()
    prod.close_wake()
    t.join(5)
    assert out == ["closed"]


def test_attach_rejects_a_foreign_segment():
    name = _name()
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=4096)
    shm.close_fd()
    sems = [posix_ipc.Semaphore(name + s, posix_ipc.O_CREX, 0o600, 0) for s in (".free", ".fill")]
    try:
        with pytest.raises(Exception, match="not a shmfetch ring"):
            Ring.attach(name)
    finally:
        posix_ipc.unlink_shared_memory(name)
        for s in sems:
            s.unlink()
            s.close()


@pytest.mark.parametrize("barrier", BARRIERS)
def test_the_barrier_mode_is_fixed_by_the_creator_and_followed_by_who_attaches(barrier):
    flag = 2 if barrier == "membarrier" else 0
    r = Ring.create(_name(), 8, 64, barrier=barrier)
    try:
        c = Ring.attach(r.name)
        assert (r.membarrier, c.membarrier) == (bool(flag), bool(flag))
        assert r._u32[5] & 2 == flag  # flags word, offset 20: bit 1 MEMBARRIER
        c.close()
    finally:
        r.close()
        r.unlink()


def test_an_unknown_barrier_mode_is_refused():
    with pytest.raises(ValueError, match="barrier"):
        Ring.create(_name(), 8, 64, barrier="mfence")


@needs_membarrier
def test_a_process_that_cannot_use_membarrier_refuses_a_membarrier_ring():
    """Its fence-free stores would race a sleeper whose membarrier does not reach it: refuse, loudly."""
    r = Ring.create(_name(), 8, 64, barrier="membarrier")
    code = (
        "import sys\n"
        "from shmfetch.ipc import membarrier\n"
        "membarrier._NR = None  # as on a kernel or architecture without it\n"
        "from shmfetch.ipc.ring import Ring, RingError\n"
        "try:\n"
        f"    Ring.attach({r.name!r})\n"
        "except RingError as e:\n"
        "    print(e)\n"
        "    sys.exit(0)\n"
        "sys.exit('attached')\n"
    )
    try:
        p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "needs membarrier" in p.stdout
    finally:
        r.close()
        r.unlink()


def _registered_in_child(conn) -> None:
    conn.send(membarrier._registered_pid == os.getpid())
    conn.close()


@needs_membarrier
def test_a_forked_child_is_registered_again():
    """The kernel's registration is per process and a fork makes a new one: a child that inherits a
    membarrier-mode Ring and produces into it must be registered, or sleepers' barriers miss it."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_registered_in_child, args=(child,))
    p.start()
    try:
        assert parent.poll(60) and parent.recv() is True
    finally:
        p.join(10)


def _consumer(name: str, count: int, conn) -> None:
    r = Ring.attach(name)
    got = [r.get(msgpack.unpackb, timeout=60) for _ in range(count)]
    r.close()
    conn.send(got)
    conn.close()


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.text(max_size=200),
            st.lists(st.integers(min_value=-(2**63), max_value=2**64 - 1), max_size=20),
        ),
        max_size=60,
    )
)
def test_producer_and_consumer_processes_agree_on_every_record(records):
    r = Ring.create(_name(), 8, 64)  # tiny ring: forces wrap-around, fragments and a full ring
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_consumer, args=(r.name, len(records), child))
    p.start()
    try:
        for rec in records:
            r.put(msgpack.packb(rec), timeout=60)
        assert parent.poll(60), "consumer did not finish"
        assert parent.recv() == records
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(10)
        r.close()
        r.unlink()


# -- protocol v2: positions, close, crash points, wake-ups ------------------------------------------------

BOUND = 60  # seconds: the most any one wait in these tests may take before it counts as a hang


def _peer(*args: object, fault: str | None = None, spin: int | None = None) -> subprocess.Popen[str]:
    """tests/ring_peer.py in its own process, armed with SHMFETCH_FAULT=fault if given."""
    env = {k: v for k, v in os.environ.items() if k not in (faults.ENV, "RING_PEER_SPIN")}
    if fault is not None:
        env[faults.ENV] = fault
    if spin is not None:
        env["RING_PEER_SPIN"] = str(spin)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ring_peer", *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out, err


def _assert_killed(proc: subprocess.Popen[str]) -> None:
    rc, _, err = _finish(proc)
    assert rc == -signal.SIGKILL, f"peer was not killed at its fault point (exit {rc}): {err.strip()}"


def _drain_in_thread(ring: Ring) -> tuple[threading.Thread, list]:
    """Consume message indexes until RingClosed; ``got`` ends with "closed" if the close was seen."""
    got: list = []

    def drain() -> None:
        try:
            while True:
                got.append(index_of(ring.get(timeout=BOUND)))
        except RingClosed:
            got.append("closed")

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    return t, got


def test_put_returns_end_positions_and_get_publishes_tail_before_it_returns(ring):
    prod, cons = ring
    assert prod.put(b"a") == 1
    assert prod.positions() == (1, 0)
    assert prod.put_many([b"b", b"x" * 100, b"c"]) == [2, 4, 5]  # 108 bytes with its header: 2 slots
    assert cons.get() == b"a"
    assert prod.positions() == (5, 1)  # the creator sees the message taken as soon as get returned
    assert cons.get_many(bytes, 64) == [b"b", b"x" * 100, b"c"]
    assert prod.positions() == (5, 5)


def test_close_lets_the_consumer_drain_everything_published_then_stop(ring):
    prod, cons = ring
    ends = prod.put_many([bytes([i]) * 30 for i in range(5)])
    prod.close_wake()
    assert cons.get_many(bytes, 2) == [bytes([0]) * 30, bytes([1]) * 30]
    assert [cons.get() for _ in range(3)] == [bytes([i]) * 30 for i in range(2, 5)]
    with pytest.raises(RingClosed):
        cons.get(timeout=BOUND)
    assert prod.positions() == (ends[-1], ends[-1])


def test_producer_blocked_on_a_full_ring_is_woken_by_close():
    r = Ring.create(_name(), 8, 64)
    try:
        for i in range(8):
            r.put(message(i, 40))
        outcome: list[str] = []

        def produce() -> None:
            try:
                r.put(message(8, 40))  # no timeout: only a consumer or the close can end this wait
                outcome.append("put")
            except RingClosed:
                outcome.append("closed")

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        t.join(0.3)
        assert t.is_alive()
        r.close_wake()
        t.join(BOUND)
        assert outcome == ["closed"]
    finally:
        r.close()
        r.unlink()


@pytest.mark.parametrize(
    "point,nth,committed",
    [
        ("ring.put.after_payload", 3, 2),  # record 3 written, head not stored: not committed
        ("ring.put.after_head", 3, 3),  # committed, but the sleeping consumer was never woken: a lost wake-up
        ("ring.put.after_post", 3, 3),
    ],
)
def test_producer_killed_at_each_step_leaves_exactly_the_committed_messages(point, nth, committed):
    r = Ring.create(_name(), 64, 64)
    try:
        t, got = _drain_in_thread(r)  # asleep in the kernel when the producer starts
        _assert_killed(_peer("produce", r.name, 10, 40, fault=f"{point}:{nth}", spin=0))
        r.close_wake()  # the creator, having seen its producer die
        t.join(BOUND)
        assert got == [*range(committed), "closed"]
    finally:
        r.close()
        r.unlink()


def test_producer_killed_between_fragments_leaves_no_partial_message():
    r = Ring.create(_name(), 64, 64)  # max_fragment 1016: a 3000-byte message is three records
    try:
        t, got = _drain_in_thread(r)
        _assert_killed(_peer("produce", r.name, 5, 3000, fault="ring.put.between_fragments:4"))
        r.close_wake()
        t.join(BOUND)
        # message 0 is whole; message 1 had one fragment published, which the consumer read and dropped
        assert got == [0, "closed"]
        head, tail = r.positions()
        assert head == tail
    finally:
        r.close()
        r.unlink()


@pytest.mark.parametrize(
    "point,nth,taken",
    [
        ("ring.get.after_read", 3, 2),  # message 3 read, tail not stored: not taken, re-queue it
        ("ring.get.after_tail", 3, 3),  # tail stored: taken (the worker may be acting on it)
    ],
)
def test_consumer_killed_at_each_step_has_published_exactly_what_it_took(point, nth, taken):
    r = Ring.create(_name(), 64, 64)
    try:
        ends = r.put_many([message(i, 40 + 30 * i) for i in range(10)])
        _assert_killed(_peer("consume", r.name, 10, fault=f"{point}:{nth}"))
        tail = r.positions()[1]
        assert [end <= tail for end in ends] == [True] * taken + [False] * (10 - taken)
    finally:
        r.close()
        r.unlink()


@pytest.mark.parametrize("barrier", BARRIERS)
def test_wake_ups_are_not_lost_when_both_sides_keep_falling_asleep(barrier):
    """A tiny ring and no spinning: the producer waits for room and the consumer for records all the time,
    so every sleep races a position store on the other side; any lost wake-up is a hang."""
    rnd = random.Random(9)
    count = 4000
    r = Ring.create(_name(), 8, 64, barrier=barrier)
    r.poll = r.spin = 0
    try:
        proc = _peer("consume", r.name, count, spin=0)
        i = 0
        while i < count:
            burst = min(count - i, rnd.choice((1, 1, 2, 5, 17)))
            msgs = [message(j, rnd.choice((8, 20, 56, 100, 300))) for j in range(i, i + burst)]
            if burst == 1:
                r.put(msgs[0], timeout=BOUND)
            else:
                r.put_many(msgs)
            i += burst
            if rnd.random() < 0.01:
                time.sleep(0.001)  # let the consumer fall asleep on an empty ring
        rc, out, err = _finish(proc)
        assert (rc, out.strip()) == (0, "ok"), err
    finally:
        r.close()
        r.unlink()


@pytest.mark.slow
def test_an_idle_consumer_sleeps_in_the_kernel():
    r = Ring.create(_name(), 64, 64)
    proc = _peer("consume", r.name, 1)
    try:
        # Wait until the peer has started and is blocked (its CPU time stops moving), bounded.
        deadline, last = time.monotonic() + BOUND, -1
        while (now := cpu_ticks(proc.pid)) != last and time.monotonic() < deadline:
            last = now
            time.sleep(0.5)
        time.sleep(2)
        assert cpu_ticks(proc.pid) - last <= 1, "an idle consumer used CPU"
        r.put(message(0, 40))
        rc, out, err = _finish(proc)
        assert (rc, out.strip()) == (0, "ok"), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        r.close()
        r.unlink()
