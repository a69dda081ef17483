"""A single-producer single-consumer ring of msgpack messages in POSIX shared memory (protocol v2).

The byte layout and the protocol are specified in docs/RING.md; this module is one implementation of it
(native_bench/ring.h is the other). In short: a header page, then ``nslots`` slots of ``slot_size`` bytes.
A record is an 8-byte header (length, flags) plus payload and takes ``k`` whole slots. Messages larger
than a quarter of the ring are cut into fragments flagged ``MORE``; the consumer glues them back together.

``head`` (producer) and ``tail`` (consumer) in shared memory are the synchronisation: a record is
published by the ``head`` store that covers it, and its slots are given back by the ``tail`` store that
covers them. The two POSIX semaphores are wake-ups only: a side that finds nothing to do announces it in
its ``*_sleeping`` word, fences, re-checks, and sleeps in ``sem_wait``; the other side posts only when it
sees that word set after its own position store and a fence (docs/RING.md, "Sleeping and waking", has
the lost-wake-up argument; "Fences" the two modes: a fence after every position store, or, in a ring
flagged MEMBARRIER, none there and a membarrier(2) by each side about to sleep instead). Close is the
``CLOSED`` flag: a consumer that sees it drains up to ``head`` and stops.

The creator (the master) owns the segment and both semaphores and is the only one that unlinks them.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import posix_ipc

from . import faults, membarrier, names
from .segment import create_segment, unmap

MAGIC = b"SHMFRING"
VERSION = 2
HEADER_SIZE = 256
REC_HDR = struct.Struct("<II")  # length, flags
FLAG_MORE = 1
RING_CLOSED = 1
RING_MEMBARRIER = 2  # the peers' fast paths may omit the fence; sleepers issue membarrier (docs/RING.md)

_HDR = struct.Struct("<8sIIIII")  # magic, version, slot_size, nslots, flags, creator_pid
OFF_FLAGS = 20
OFF_HEAD = 64
OFF_TAIL = 128
OFF_CONSUMER_SLEEPING = 192
OFF_PRODUCER_SLEEPING = 196
# The shared words, as indexes into u64 / u32 views of the segment. A memoryview item store is one
# aligned 8- or 4-byte store; struct.pack_into zero-fills its buffer first and so would let the other
# side read a torn position (0) in the middle of a store.
_Q_HEAD, _Q_TAIL = OFF_HEAD // 8, OFF_TAIL // 8
_I_FLAGS, _I_CSLEEP, _I_PSLEEP = OFF_FLAGS // 4, OFF_CONSUMER_SLEEPING // 4, OFF_PRODUCER_SLEEPING // 4

# Before a side announces a sleep (in membarrier mode a system call that interrupts the other side's CPU,
# then a futex sleep and a post), it re-checks POLL times back to back (~0.15 us each), then SPIN times
# each after sched_yield (which releases the GIL and lets any runnable thread, or a peer on this CPU, run).
# Both bounded: a few tens of microseconds at most, only on the step from busy to empty, so an idle ring
# still sleeps in the kernel. 20 and 20 measured best between two processes on this 2-core machine
# (docs/BENCHMARKS.md, "Membarrier fence mode"); Ring.poll and Ring.spin override them per ring.
POLL = 20
SPIN = 20
_yield = os.sched_yield

if sys.byteorder != "little":  # the views are native-endian; the layout is little-endian
    raise ImportError("shmfetch.ring implements a little-endian layout and has no byte-swapping path")

# The machines whose memory model the Python ring's fences are argued for (docs/RING.md, "Fences"): its
# plain memoryview loads and stores carry no acquire/release, and its "full fence" is a locked instruction,
# which orders an earlier store before a later load on x86-64 only. Elsewhere it refuses to run.
SUPPORTED_MACHINES = ("x86_64",)


def unsupported_machine(machine: str | None = None) -> str | None:
    """Why the Python ring cannot run on ``machine`` (default: this one), or None if it can."""
    machine = machine or os.uname().machine
    if machine in SUPPORTED_MACHINES:
        return None
    return (
        f"this machine is {machine}: shmfetch's shared-memory ring is specified for x86-64 only (its "
        'ordering of plain loads and stores is what the ring\'s fences rely on; docs/RING.md, "Fences")'
    )


_MACHINE_PROBLEM = unsupported_machine()

Payload = bytes | bytearray | memoryview


class RingError(RuntimeError):
    """The segment is not a ring of this layout version, or a record in it is corrupt."""


class RingClosed(Exception):
    """The ring was closed by its creator: the consumer has drained it, or the producer may not wait."""


def _full_fence() -> tuple[Callable[..., Any], Callable[[], None]]:
    """A full memory barrier for Python code: acquire and release a private, uncontended lock.

    CPython 3.11 implements ``threading.Lock`` with a POSIX semaphore (3.13: an atomic byte); glibc's
    ``sem_trywait`` and ``sem_post`` are atomic read-modify-writes, which on x86-64 are ``lock``-prefixed
    instructions, and a locked instruction orders every earlier store before every later load
    (docs/RING.md, "Fences"). Returned as the two bound methods, called back to back on the hot path.
    """
    lock = threading.Lock()
    return lock.acquire, lock.release


def _check_geometry(name: str, slot_size: int, nslots: int, segment_size: int) -> None:
    """Refuse a header whose geometry is not one a creator may write (docs/RING.md, "Ring segment"), as
    ring.h's attach does: the slot arithmetic masks positions and shifts lengths, and would read and write
    outside the mapping, or silently past the data area, with anything else."""
    if slot_size < 64 or slot_size & (slot_size - 1):
        raise RingError(f"{name}: corrupt ring header: slot_size {slot_size} is not a power of two >= 64")
    if nslots < 2 or nslots & (nslots - 1):
        raise RingError(f"{name}: corrupt ring header: nslots {nslots} is not a power of two >= 2")
    if HEADER_SIZE + nslots * slot_size > segment_size:
        raise RingError(
            f"{name}: corrupt ring header: {nslots} slots of {slot_size} bytes do not fit in a segment of "
            f"{segment_size} bytes"
        )


class Ring:
    """One end of a ring. ``Ring.create`` makes a new one; ``Ring.attach`` opens an existing one.

    Only one thread of one process may produce, and only one may consume; callers that share an end
    between threads must serialise it themselves.
    """

    def __init__(
        self, name: str, mm: mmap.mmap, free: posix_ipc.Semaphore, fill: posix_ipc.Semaphore, owner: bool
    ):
        self.name = name
        self._mm = mm
        self._view = memoryview(mm)
        self._u64 = self._view.cast("Q")  # head and tail
        self._u32 = self._view.cast("I")  # flags and the sleeping words
        self.free = free  # wakes the producer
        self.fill = fill  # wakes the consumer
        self.owner = owner
        if _MACHINE_PROBLEM:
            raise RingError(f"{name}: {_MACHINE_PROBLEM}")
        magic, version, self.slot_size, self.nslots, flags, _ = _HDR.unpack_from(mm, 0)
        if magic != MAGIC or version != VERSION:
            raise RingError(f"{name}: not a shmfetch ring of version {VERSION}")
        _check_geometry(name, self.slot_size, self.nslots, len(mm))
        # Fence mode: a fence after every position store. Membarrier mode: none there; whoever announces a
        # sleep issues membarrier instead, which reaches this process only once it is registered.
        self.membarrier = bool(flags & RING_MEMBARRIER)
        if self.membarrier and not membarrier.register():
            raise RingError(f"{name}: the ring needs membarrier(2), which this process cannot use")
        self._mask = self.nslots - 1
        self._data_bytes = self.nslots * self.slot_size
        # A fragment may take a quarter of the ring, so that a big message streams while the consumer drains.
        self.max_fragment = max(1, self._data_bytes // 4 - REC_HDR.size)
        # Each end keeps its own position privately and publishes it when the protocol says so; it also
        # caches the last position of the other side it loaded, and reloads only when that is used up.
        self._head = self._head_published = self._head_seen = self._u64[_Q_HEAD]
        self._tail = self._tail_published = self._tail_seen = self._u64[_Q_TAIL]
        self._partial: bytearray | None = None
        self._fence_take, self._fence_give = _full_fence()
        # The producer sleeps until a quarter of the ring is free, and the consumer wakes it only then:
        # one wake-up per quarter ring, not one per record, when the consumer is the slower side. Any one
        # record fits in a quarter (k <= nslots / 4, see max_fragment), so that is always enough room.
        self._wake_free = max(1, self.nslots // 4)
        self._need_tail = 0  # producer, while waiting: the tail that makes room for its record
        self.poll = POLL
        self.spin = SPIN
        # Hot-path constants, computed once (put/get run once per request and per result).
        self._end = HEADER_SIZE + self._data_bytes  # first byte after the data area
        self._k_round = REC_HDR.size + self.slot_size - 1  # k = (n + _k_round) >> _shift
        self._shift = self.slot_size.bit_length() - 1

    @classmethod
    def create(cls, name: str, nslots: int, slot_size: int, barrier: str | None = None) -> Ring:
        """A new ring, owned by this process. ``barrier`` is ``"membarrier"``, ``"fence"``, or None for
        membarrier where this process can use it (docs/RING.md, "Fences"); it is fixed for the ring's life."""
        if _MACHINE_PROBLEM:
            raise RingError(f"{name}: {_MACHINE_PROBLEM}")
        if nslots < 2 or nslots & (nslots - 1) or slot_size < 64 or slot_size & (slot_size - 1):
            raise ValueError("nslots and slot_size must be powers of two, nslots >= 2, slot_size >= 64")
        if barrier not in (None, "membarrier", "fence"):
            raise ValueError(f"barrier must be 'membarrier', 'fence' or None, not {barrier!r}")
        use_membarrier = barrier != "fence" and membarrier.register()
        if barrier == "membarrier" and not use_membarrier:
            raise RingError(f"{name}: membarrier(2) is not available to this process")
        size = HEADER_SIZE + nslots * slot_size
        mm, _ = create_segment(name, size)  # allocated in full: a full /dev/shm fails here, not by SIGBUS
        flags = RING_MEMBARRIER if use_membarrier else 0
        _HDR.pack_into(mm, 0, MAGIC, VERSION, slot_size, nslots, flags, os.getpid())
        free = fill = None
        try:
            # Wake-ups only: a count is "look again", never "a slot is free" or "a record is there".
            free = posix_ipc.Semaphore(name + ".free", posix_ipc.O_CREX, 0o600, 0)
            fill = posix_ipc.Semaphore(name + ".fill", posix_ipc.O_CREX, 0o600, 0)
        except BaseException:
            for sem in (free, fill):
                if sem is not None:
                    sem.unlink()
            posix_ipc.unlink_shared_memory(name)
            raise
        return cls(name, mm, free, fill, owner=True)

    @classmethod
    def create_fresh(
        cls, make_name: Callable[[], str], nslots: int, slot_size: int, barrier: str | None = None
    ) -> Ring:
        """``create`` under a name from ``make_name``, drawing another while the one drawn exists
        (names.create_fresh): a name someone else took is never a failure of ours."""
        return names.create_fresh(make_name, lambda name: cls.create(name, nslots, slot_size, barrier))

    @classmethod
    def attach(cls, name: str) -> Ring:
        shm = posix_ipc.SharedMemory(name)
        try:
            mm = mmap.mmap(shm.fd, shm.size)
        finally:
            shm.close_fd()
        return cls(
            name, mm, posix_ipc.Semaphore(name + ".free"), posix_ipc.Semaphore(name + ".fill"), owner=False
        )

    # -- producer -------------------------------------------------------------------------------------

    def slots_for(self, nbytes: int) -> int:
        """Slots a message of ``nbytes`` takes, fragments included (the master's credit unit)."""
        frag = self.max_fragment
        nfrag = max(1, -(-nbytes // frag))
        last = nbytes - (nfrag - 1) * frag
        per_full = -(-(frag + REC_HDR.size) // self.slot_size)
        return (nfrag - 1) * per_full + -(-(last + REC_HDR.size) // self.slot_size)

    def put(self, payload: Payload, timeout: float | None = None) -> int:
        """Publish one message and return the ring position just past it (``head`` after it).

        Blocks (in the kernel) while the ring is full; raises RingClosed if it must wait on a closed ring.
        With a timeout, each wait for room is bounded by it and raises posix_ipc.BusyError. If that happens
        after the first fragment of a long message was published, the message is left incomplete: the
        consumer is not draining, and the ring is only good for closing (the daemon passes no timeout;
        tests do, so that a dead peer fails them instead of hanging them).
        """
        if type(payload) is not bytes:
            payload = memoryview(payload).cast("B")
        n = len(payload)
        if n <= self.max_fragment:
            head = self._write_record(payload, n, 0, timeout)
            self._publish(head)
            return head
        return self._put_fragments(memoryview(payload), timeout)

    def put_many(self, payloads: Iterable[Payload]) -> list[int]:
        """Publish several messages, in order, with one ``head`` store for the whole run; return the end
        position of each (as ``put`` does for one).

        The run is also published before the producer could block on a full ring (``_wait_room``), and
        whatever was written is published if the iterable or a wait raises.
        """
        ends: list[int] = []
        write, frag = self._write_record, self.max_fragment
        try:
            for payload in payloads:
                if type(payload) is not bytes:
                    payload = memoryview(payload).cast("B")
                n = len(payload)
                if n > frag:
                    ends.append(self._put_fragments(memoryview(payload), None))
                    continue
                ends.append(write(payload, n, 0, None))
        finally:
            if self._head != self._head_published:
                self._publish(self._head)
        return ends

    def _put_fragments(self, mv: memoryview, timeout: float | None) -> int:
        """A message longer than ``max_fragment``: one record per fragment, each published at once so
        that the consumer can drain the ring while the rest is written."""
        n, frag, pos = len(mv), self.max_fragment, 0
        while True:
            chunk = mv[pos : pos + frag]
            pos += len(chunk)
            head = self._write_record(chunk, len(chunk), FLAG_MORE if pos < n else 0, timeout)
            self._publish(head)
            if pos >= n:
                return head
            if faults.ACTIVE:
                faults.hit("ring.put.between_fragments")

    def _write_record(self, payload: Payload, n: int, flags: int, timeout: float | None) -> int:
        """The one record write: wait for ``k`` free slots, copy the payload, then the header, at the
        private ``head``; return the new private ``head`` (not yet published). Fault site
        ``ring.put.after_payload``: the record is written, ``head`` is not stored."""
        k = (n + self._k_round) >> self._shift
        head = self._head
        if head + k - self._tail_seen > self.nslots:
            self._wait_room(head + k - self.nslots, timeout)
        mm = self._mm
        start = HEADER_SIZE + (head & self._mask) * self.slot_size
        lo = start + REC_HDR.size
        end = self._end
        if lo + n <= end:
            mm[lo : lo + n] = payload
        else:  # the payload runs past the end of the data area and continues at its start
            first = end - lo
            mm[lo:end] = payload[:first]
            mm[HEADER_SIZE : HEADER_SIZE + n - first] = payload[first:]
        self._u64[start >> 3] = n | flags << 32  # the record header, one aligned store (REC_HDR layout)
        self._head = head = head + k
        if faults.ACTIVE:
            faults.hit("ring.put.after_payload")
        return head

    def _publish(self, head: int) -> None:
        """Store ``head``; then, after a full fence, wake the consumer if it announced it sleeps."""
        self._u64[_Q_HEAD] = head
        self._head_published = head
        if faults.ACTIVE:
            faults.hit("ring.put.after_head")
        if not self.membarrier:  # the head store above before the load of consumer_sleeping below
            self._fence_take()
            self._fence_give()
        words = self._u32
        if words[_I_CSLEEP]:
            words[_I_CSLEEP] = 0  # one post per announced sleep, not one per record
            self.fill.release()
        if faults.ACTIVE:
            faults.hit("ring.put.after_post")

    def _wait_room(self, need_tail: int, timeout: float | None) -> None:
        """Producer: wait until the consumer's ``tail`` reaches ``need_tail``. Whatever this producer
        wrote and has not published is published first: the consumer may need it to make room."""
        if self._head != self._head_published:
            self._publish(self._head)
        self._need_tail = need_tail
        self._wait(self._room, _I_PSLEEP, self.free, timeout)
        if self._tail_seen < need_tail:
            raise RingClosed(self.name)

    def _room(self) -> bool:
        closed = self._u32[_I_FLAGS] & RING_CLOSED
        self._tail_seen = self._u64[_Q_TAIL]
        return self._tail_seen >= self._need_tail or bool(closed)

    # -- consumer -------------------------------------------------------------------------------------

    def get(self, decode: Callable[[Any], Any] = bytes, timeout: float | None = None) -> Any:
        """Take one message, publish ``tail`` past it, and return ``decode(payload)``.

        ``tail`` is stored before this returns, so by the time the caller acts on the message its taking
        is visible to the creator (the master re-queues, without a strike, only requests whose end
        position is beyond a dead worker's ``tail``). ``decode`` runs on a memoryview of the slots when
        the message is one unwrapped record, so msgpack unpacks without a copy; it must not keep that view.
        Raises RingClosed once the ring is closed and drained (a message with only some fragments
        published is discarded then: it was never committed), and posix_ipc.BusyError if ``timeout``
        expires first (0 = do not wait).
        """
        try:
            return self._take(decode, timeout)
        finally:
            if self._tail != self._tail_published:
                self._release()

    def get_many(
        self, decode: Callable[[Any], Any] = bytes, limit: int = 64, timeout: float | None = None
    ) -> list[Any]:
        """Wait for one message like ``get``, then take up to ``limit - 1`` more whose records are already
        published, without waiting; publish ``tail`` once for the batch and return them decoded, in order.

        A message whose later fragments are not published yet ends the batch; its fragments read so far
        are kept and the next call finishes it.
        """
        out = [self._take(decode, timeout)]
        try:
            while len(out) < limit and self._readable_now():
                msg = self._take_published(decode)
                if msg is _MORE:
                    break
                out.append(msg)
        finally:
            self._release()
        return out

    def _readable_now(self) -> bool:
        if self._tail != self._head_seen:
            return True
        self._head_seen = self._u64[_Q_HEAD]
        return self._tail != self._head_seen

    def _take(self, decode: Callable[[Any], Any], timeout: float | None) -> Any:
        """Read records at the private ``tail`` until one message is whole; does not publish ``tail``."""
        while True:
            if self._tail == self._head_seen:
                self._wait_data(timeout)
            msg = self._read_record(decode)
            if msg is not _MORE:
                return msg

    def _take_published(self, decode: Callable[[Any], Any]) -> Any:
        """Like ``_take`` but never waits: returns _MORE if the message is not wholly published yet."""
        while True:
            msg = self._read_record(decode)
            if msg is not _MORE or not self._readable_now():
                return msg

    def _read_record(self, decode: Callable[[Any], Any]) -> Any:
        """The one record read: the record at the private ``tail`` (published by the producer), stepped
        over privately; returns the decoded message, or _MORE after a fragment that is not the last."""
        tail = self._tail
        start = HEADER_SIZE + (tail & self._mask) * self.slot_size
        word = self._u64[start >> 3]  # the record header (REC_HDR layout), one aligned load
        n, flags = word & 0xFFFFFFFF, word >> 32
        k = (n + self._k_round) >> self._shift
        if k > self.nslots:
            raise RingError(f"{self.name}: corrupt record length {n}")
        # Stepping over before decoding: a record decode rejects is consumed, not read again forever.
        # The slots stay ours until tail is published, so the view below is still safe to read.
        self._tail = tail + k
        lo = start + REC_HDR.size
        hi = lo + n
        if not flags and hi <= self._end and self._partial is None:
            return decode(self._view[lo:hi])  # the common case: a whole message in one unwrapped record
        buf = self._partial if self._partial is not None else bytearray()
        if hi <= self._end:
            buf += self._view[lo:hi]
        else:
            buf += self._view[lo : self._end]
            buf += self._view[HEADER_SIZE : HEADER_SIZE + hi - self._end]
        if flags & FLAG_MORE:
            self._partial = buf
            return _MORE
        self._partial = None
        return decode(buf)

    def _release(self) -> None:
        """Store ``tail``; then, after a full fence, wake the producer if it announced it sleeps and a
        quarter of the ring is free (the producer's own re-check before sleeping asks for no more)."""
        if faults.ACTIVE:
            faults.hit("ring.get.after_read")
        tail = self._tail
        self._u64[_Q_TAIL] = tail
        self._tail_published = tail
        if faults.ACTIVE:
            faults.hit("ring.get.after_tail")
        if not self.membarrier:  # the tail store above before the load of producer_sleeping below
            self._fence_take()
            self._fence_give()
        words = self._u32
        if words[_I_PSLEEP] and self.nslots - (self._u64[_Q_HEAD] - tail) >= self._wake_free:
            words[_I_PSLEEP] = 0
            self.free.release()

    def _wait_data(self, timeout: float | None) -> None:
        """Consumer: wait until ``head`` moves past the private ``tail``; RingClosed if the ring is closed
        and there is nothing left (a partly received message is dropped then: it was never committed)."""
        if self._tail != self._tail_published:
            self._release()  # a producer may be waiting for these slots to finish a message
        self._wait(self._readable, _I_CSLEEP, self.fill, timeout)
        if self._head_seen == self._tail:
            self._partial = None
            raise RingClosed(self.name)

    def _readable(self) -> bool:
        closed = self._u32[_I_FLAGS] & RING_CLOSED  # flags before head: CLOSED follows the last head
        self._head_seen = self._u64[_Q_HEAD]
        return self._head_seen != self._tail or bool(closed)

    # -- sleeping (docs/RING.md, "Sleeping and waking") ---------------------------------------------------

    def _wait(
        self, ready: Callable[[], bool], sleeping: int, sem: posix_ipc.Semaphore, timeout: float | None
    ) -> None:
        """Return once ``ready()`` (which loads the other side's position). Otherwise re-check up to
        ``poll`` times, then up to ``spin`` times yielding the CPU (and the GIL) before each; then announce
        in our ``sleeping`` word, fence, re-check, and sleep on ``sem``. posix_ipc.BusyError after
        ``timeout``."""
        if ready():
            return
        if timeout is not None and timeout <= 0:
            raise posix_ipc.BusyError(f"{self.name}: would wait")
        for _ in range(self.poll):
            if ready():
                return
        for _ in range(self.spin):
            _yield()
            if ready():
                return
        deadline = None if timeout is None else time.monotonic() + timeout
        words = self._u32
        try:
            while True:
                words[sleeping] = 1
                self._sleep_fence()  # the sleeping store above before ready()'s loads below
                if ready():
                    return
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise posix_ipc.BusyError(f"{self.name}: timed out")
                try:
                    sem.acquire(left)
                except (posix_ipc.BusyError, posix_ipc.SignalError):
                    pass  # the loop re-checks, and the deadline
                if ready():
                    return
        finally:
            words[sleeping] = 0

    def _sleep_fence(self) -> None:
        """The fence of a side about to sleep: membarrier in membarrier mode (it also orders the other
        side's fence-free position store against its load of our sleeping word), else a full fence."""
        if self.membarrier:
            membarrier.barrier()
        else:
            self._fence_take()
            self._fence_give()

    # -- lifecycle ------------------------------------------------------------------------------------

    def close_wake(self) -> None:
        """Creator only: set CLOSED, then wake both sides. The consumer drains up to ``head`` and stops;
        a producer waiting for room raises RingClosed. Stale wake-ups only cost the woken side a re-check.
        """
        self._u32[_I_FLAGS] |= RING_CLOSED
        self._fence_take()
        self._fence_give()
        self.fill.release()
        self.free.release()

    @property
    def closed(self) -> bool:
        return bool(self._u32[_I_FLAGS] & RING_CLOSED)

    def positions(self) -> tuple[int, int]:
        """(head, tail) as published in shared memory: records waiting = head - tail slots. A message
        whose end position (from ``put``) is <= tail has been taken by the consumer."""
        return self._u64[_Q_HEAD], self._u64[_Q_TAIL]

    def close(self) -> None:
        """Drop this process's mapping and handles. The creator also unlinks (see ``unlink``)."""
        unmap(self._mm, self._u64, self._u32, self._view)
        for sem in (self.free, self.fill):
            try:
                sem.close()
            except posix_ipc.ExistentialError:
                pass

    def unlink(self) -> None:
        """Remove the segment and semaphores from the system. Safe to call twice."""
        unlink_ring(self.name)


def unlink_ring(name: str) -> None:
    """Unlink a ring's three objects by name, ignoring the ones already gone."""
    for fn, n in (
        (posix_ipc.unlink_shared_memory, name),
        (posix_ipc.unlink_semaphore, name + ".free"),
        (posix_ipc.unlink_semaphore, name + ".fill"),
    ):
        try:
            fn(n)
        except posix_ipc.ExistentialError:
            pass


_MORE = object()
