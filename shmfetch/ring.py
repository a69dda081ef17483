"""A single-producer single-consumer ring of msgpack messages in POSIX shared memory.

The byte layout and the protocol are specified in docs/RING.md; this module is one implementation of it
(native_bench/ring.h is the other). In short: a header page, then ``nslots`` slots of ``slot_size`` bytes.
A record is an 8-byte header (length, flags) plus payload and takes ``k`` whole slots. Two POSIX semaphores
count free slots (``.free``) and published records (``.fill``), so a full or empty ring sleeps in the
kernel instead of spinning. Messages larger than a quarter of the ring are cut into fragments flagged
``MORE``; the consumer glues them back together.

The creator (the master) owns the segment and both semaphores and is the only one that unlinks them.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable, Iterable
from typing import Any

import posix_ipc

from .segment import create_segment

MAGIC = b"SHMFRING"
VERSION = 1
HEADER_SIZE = 256
REC_HDR = struct.Struct("<II")  # length, flags
FLAG_MORE = 1
RING_CLOSED = 1

_HDR = struct.Struct("<8sIIIII")  # magic, version, slot_size, nslots, flags, creator_pid
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
OFF_FLAGS = 20
OFF_HEAD = 64
OFF_TAIL = 128


class RingError(RuntimeError):
    """The segment is not a ring of this layout version."""


class RingClosed(Exception):
    """The ring was closed by its creator and every published record has been consumed."""


def acquire(sem: posix_ipc.Semaphore, timeout: float | None = None) -> None:
    """sem_wait that survives signals: posix_ipc raises SignalError on EINTR, which is not a failure."""
    while True:
        try:
            sem.acquire(timeout)
            return
        except posix_ipc.SignalError:
            continue


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
        self.free = free
        self.fill = fill
        self.owner = owner
        magic, version, self.slot_size, self.nslots, _, _ = _HDR.unpack_from(mm, 0)
        if magic != MAGIC or version != VERSION:
            raise RingError(f"{name}: not a shmfetch ring of version {VERSION}")
        self._mask = self.nslots - 1
        self._data_bytes = self.nslots * self.slot_size
        # A fragment may take a quarter of the ring, so that a big message streams while the consumer drains.
        self.max_fragment = max(1, self._data_bytes // 4 - REC_HDR.size)
        # Each end keeps its own position privately and only publishes it; it never reads it back.
        self._head = _U64.unpack_from(mm, OFF_HEAD)[0]
        self._tail = _U64.unpack_from(mm, OFF_TAIL)[0]
        self._partial: bytearray | None = None
        # Hot-path constants and bound methods, looked up once here instead of per record (put/get run
        # once per request and per result, so attribute lookups were most of their cost).
        self._end = HEADER_SIZE + self._data_bytes  # first byte after the data area
        self._k_round = REC_HDR.size + self.slot_size - 1  # k = (n + _k_round) >> _shift
        self._shift = self.slot_size.bit_length() - 1
        self._free_acquire = free.acquire
        self._free_release = free.release
        self._fill_acquire = fill.acquire
        self._fill_release = fill.release

    @classmethod
    def create(cls, name: str, nslots: int, slot_size: int) -> Ring:
        if nslots < 2 or nslots & (nslots - 1) or slot_size < 64 or slot_size & (slot_size - 1):
            raise ValueError("nslots and slot_size must be powers of two, nslots >= 2, slot_size >= 64")
        size = HEADER_SIZE + nslots * slot_size
        mm, _ = create_segment(name, size)  # allocated in full: a full /dev/shm fails here, not by SIGBUS
        _HDR.pack_into(mm, 0, MAGIC, VERSION, slot_size, nslots, 0, os.getpid())
        free = fill = None
        try:
            free = posix_ipc.Semaphore(name + ".free", posix_ipc.O_CREX, 0o600, nslots)
            fill = posix_ipc.Semaphore(name + ".fill", posix_ipc.O_CREX, 0o600, 0)
        except BaseException:
            for sem in (free, fill):
                if sem is not None:
                    sem.unlink()
            posix_ipc.unlink_shared_memory(name)
            raise
        return cls(name, mm, free, fill, owner=True)

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

    def put(self, payload: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Publish one message. Blocks (in the kernel) while the ring is full.

        With a timeout, raises posix_ipc.BusyError if a fragment could not get its slots in time; slots
        already taken for that fragment are given back, but earlier fragments stay published.
        """
        if type(payload) is bytes and len(payload) <= self.max_fragment:
            # Fast path: one record (every request, most results). Same steps as _put_record, inlined.
            n = len(payload)
            k = (n + self._k_round) >> self._shift
            if k == 1:
                try:
                    self._free_acquire(timeout)
                except posix_ipc.SignalError:
                    acquire(self.free, timeout)
            else:
                self._take_slots(k, timeout)
            mm = self._mm
            head = self._head
            start = HEADER_SIZE + (head & self._mask) * self.slot_size
            lo = start + 8
            if lo + n <= self._end:
                mm[lo : lo + n] = payload
            else:
                first = self._end - lo
                mm[lo : self._end] = payload[:first]
                mm[HEADER_SIZE : HEADER_SIZE + n - first] = payload[first:]
            _pack_rec_hdr(mm, start, n, 0)
            self._head = head = head + k
            _pack_u64(mm, OFF_HEAD, head)
            self._fill_release()
            return
        mv = memoryview(payload).cast("B")
        n = len(mv)
        frag = self.max_fragment
        pos = 0
        while True:
            chunk = mv[pos : pos + frag]
            pos += len(chunk)
            self._put_record(chunk, FLAG_MORE if pos < n else 0, timeout)
            if pos >= n:
                return

    def _take_slots(self, k: int, timeout: float | None) -> None:
        """sem_wait(free) k times; on timeout give back the slots already taken."""
        got = 0
        try:
            while got < k:
                acquire(self.free, timeout)
                got += 1
        except posix_ipc.BusyError:
            for _ in range(got):
                self.free.release()
            raise

    def _put_record(self, chunk: memoryview, flags: int, timeout: float | None) -> None:
        n = len(chunk)
        k = (n + REC_HDR.size + self.slot_size - 1) // self.slot_size
        self._take_slots(k, timeout)
        start = HEADER_SIZE + (self._head & self._mask) * self.slot_size
        end_of_data = HEADER_SIZE + self._data_bytes
        first = min(n, end_of_data - start - REC_HDR.size)
        view = self._view
        view[start + REC_HDR.size : start + REC_HDR.size + first] = chunk[:first]
        if first < n:
            view[HEADER_SIZE : HEADER_SIZE + n - first] = chunk[first:]
        REC_HDR.pack_into(self._mm, start, n, flags)
        self._head += k
        _U64.pack_into(self._mm, OFF_HEAD, self._head)
        self.fill.release()

    def put_many(self, payloads: Iterable[bytes | bytearray | memoryview]) -> None:
        """Publish several messages, in order, as if by ``put`` each, but with one ``head`` store per run.

        Every record still takes its slots with ``sem_wait(free)`` and gets its own ``sem_post(fill)``
        (docs/RING.md, semaphore mode); only the posts of a run of records are made together after the
        ``head`` store that publishes them all. So the consumer usually wakes once per run rather than
        once per record, which is where a stream of small messages spends most of its time. Before it
        could block on a full ring, the run so far is published, so the consumer can always drain it.
        """
        mm = self._mm
        mask, slot_size, end = self._mask, self.slot_size, self._end
        k_round, shift = self._k_round, self._shift
        free_acquire, frag = self._free_acquire, self.max_fragment
        head = self._head
        pending = 0  # records written since the last head store, not yet posted
        avail = 0  # free slots we know we can take without blocking: only this producer takes them
        try:
            for payload in payloads:
                if type(payload) is not bytes or len(payload) > frag:
                    if pending:
                        self._publish(head, pending)
                        pending = 0
                    self.put(payload)
                    head = self._head
                    avail = 0
                    continue
                n = len(payload)
                k = (n + k_round) >> shift
                if avail < k:
                    avail = self.free.value
                    if avail < k and pending:
                        self._publish(head, pending)  # we may block below: let the consumer have this run
                        pending = 0
                for _ in range(k):
                    try:
                        free_acquire()
                    except posix_ipc.SignalError:
                        acquire(self.free)
                avail -= k
                start = HEADER_SIZE + (head & mask) * slot_size
                lo = start + 8
                if lo + n <= end:
                    mm[lo : lo + n] = payload
                else:
                    first = end - lo
                    mm[lo:end] = payload[:first]
                    mm[HEADER_SIZE : HEADER_SIZE + n - first] = payload[first:]
                _pack_rec_hdr(mm, start, n, 0)
                head += k
                pending += 1
        finally:
            if pending:  # also when the iterable or a put raised: what was written is published
                self._publish(head, pending)

    def _publish(self, head: int, records: int) -> None:
        self._head = head
        _pack_u64(self._mm, OFF_HEAD, head)
        release = self._fill_release
        for _ in range(records):
            release()

    # -- consumer -------------------------------------------------------------------------------------

    def get_many(
        self, decode: Callable[[Any], Any] = bytes, limit: int = 64, timeout: float | None = None
    ) -> list[Any]:
        """Wait for one message like ``get``, then take up to ``limit - 1`` more that are already there,
        without blocking; return them all decoded, in order.

        Raises RingClosed (and posix_ipc.BusyError) like ``get`` when there is no first message. A close
        wake-up met while draining ends the batch and is put back, so the next call raises RingClosed.
        (Counting ``fill`` cannot say how many messages wait: a fragmented message posts once per record.
        Once a message has started, ``get`` waits for its remaining fragments, as it always does.)
        """
        get = self.get
        out = [get(decode, timeout)]
        while len(out) < limit:
            try:
                out.append(get(decode, 0))
            except posix_ipc.BusyError:
                break
            except RingClosed:
                self._fill_release()  # give the wake-up back for the next call
                break
        return out

    def get(self, decode: Callable[[Any], Any] = bytes, timeout: float | None = None) -> Any:
        """Take one message and return ``decode(payload)``.

        ``decode`` runs on a memoryview of the slots themselves when the message is one unwrapped record,
        so msgpack can unpack without an intermediate copy; it must not keep that view. Raises RingClosed
        after the close wake-up, and posix_ipc.BusyError if ``timeout`` expires first (0 = do not wait).
        """
        while True:
            try:
                self._fill_acquire(timeout)
            except posix_ipc.SignalError:
                acquire(self.fill, timeout)
            mm = self._mm
            tail = self._tail
            if _unpack_u64(mm, OFF_HEAD)[0] == tail:
                raise RingClosed(self.name)
            start = HEADER_SIZE + (tail & self._mask) * self.slot_size
            n, flags = _unpack_rec_hdr(mm, start)
            lo = start + 8
            if not flags and lo + n <= self._end and self._partial is None:
                # Fast path: a whole message in one unwrapped record (so k <= nslots by construction).
                result = decode(self._view[lo : lo + n])
                k = (n + self._k_round) >> self._shift
                self._tail = tail = tail + k
                _pack_u64(mm, OFF_TAIL, tail)
                release = self._free_release
                release()
                while k > 1:
                    release()
                    k -= 1
                return result
            result = self._take_record(decode)
            if result is not _MORE:
                return result
            timeout = None  # the rest of a started message is already on its way

    def _take_record(self, decode: Callable[[Any], Any]) -> Any:
        start = HEADER_SIZE + (self._tail & self._mask) * self.slot_size
        n, flags = REC_HDR.unpack_from(self._mm, start)
        k = (n + REC_HDR.size + self.slot_size - 1) // self.slot_size
        if k > self.nslots:
            raise RingError(f"{self.name}: corrupt record length {n}")
        lo = start + REC_HDR.size
        wrap = lo + n - (HEADER_SIZE + self._data_bytes)
        view = self._view
        if self._partial is None and not flags & FLAG_MORE and wrap <= 0:
            result = decode(view[lo : lo + n])
        else:
            buf = self._partial if self._partial is not None else bytearray()
            if wrap <= 0:
                buf += view[lo : lo + n]
            else:
                buf += view[lo : lo + n - wrap]
                buf += view[HEADER_SIZE : HEADER_SIZE + wrap]
            if flags & FLAG_MORE:
                self._partial = buf
                result = _MORE
            else:
                self._partial = None
                result = decode(buf)
        self._tail += k
        _U64.pack_into(self._mm, OFF_TAIL, self._tail)
        release = self.free.release
        for _ in range(k):
            release()
        return result

    # -- lifecycle ------------------------------------------------------------------------------------

    def close_wake(self) -> None:
        """Creator only: mark the ring closed and wake its consumer, which stops once it has drained."""
        _U32.pack_into(self._mm, OFF_FLAGS, _U32.unpack_from(self._mm, OFF_FLAGS)[0] | RING_CLOSED)
        self.fill.release()

    @property
    def closed(self) -> bool:
        return bool(_U32.unpack_from(self._mm, OFF_FLAGS)[0] & RING_CLOSED)

    def positions(self) -> tuple[int, int]:
        """(head, tail) as published in shared memory: records waiting = head - tail slots."""
        return _U64.unpack_from(self._mm, OFF_HEAD)[0], _U64.unpack_from(self._mm, OFF_TAIL)[0]

    def close(self) -> None:
        """Drop this process's mapping and handles. The creator also unlinks (see ``unlink``)."""
        self._view.release()
        try:
            self._mm.close()
        except BufferError:
            pass  # a decode callback kept a view; the mapping goes with the process
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
_pack_u64 = _U64.pack_into
_unpack_u64 = _U64.unpack_from
_pack_rec_hdr = REC_HDR.pack_into
_unpack_rec_hdr = REC_HDR.unpack_from
