"""The ring on its own: layout invariants, wrap-around, fragments, full and empty, close, two processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import stat
import threading

import msgpack
import posix_ipc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shmfetch.ring import HEADER_SIZE, REC_HDR, Ring, RingClosed

_n = iter(range(1_000_000))


def _name() -> str:
    return f"/shmfetch.{os.getpid()}.test{next(_n)}"


@pytest.fixture
def ring():
    r = Ring.create(_name(), 8, 64)
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


def _consumer(name: str, count: int, conn) -> None:
    r = Ring.attach(name)
    got = [r.get(msgpack.unpackb, timeout=60) for _ in range(count)]
    r.close()
    conn.send(got)
    conn.close()


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
