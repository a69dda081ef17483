"""The control segment: the shared download counter, its lock, and one slot per worker.

Layout and the crash argument are in docs/RING.md ("Control segment", "The counter"). The lock is an
``fcntl`` record lock on the counter's bytes of the segment, taken through a descriptor each process keeps
open for its life, so the kernel releases it when its holder dies, however it dies. fcntl locks belong to a
process, not a thread, so a ``threading.Lock`` orders the threads of one process in front of it.

Every increment is journalled (the values before it, then ``journal_valid``), so an increment cut short by
the holder's death is found, and undone as a whole, by whoever takes the lock next (``_take`` does it on
every acquisition). The master then makes the counter agree with the results it actually received from the
dead process (``reconcile``), without ever waiting for the lock on its event loop (``blocking=False``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator

import posix_ipc

from . import faults, names
from .segment import create_segment, unmap

MAGIC = b"SHMFCTRL"
VERSION = 3  # 3: the creator holds the life lock on the header (LIFE_START)
SLOT_STRIDE = 64
SLOTS_OFFSET = 128

_HDR = struct.Struct("<8sIIII")  # magic, version, nworkers, master_pid, slot_stride
_FLOCK = struct.Struct("hhqqi4x")  # Linux struct flock: l_type, l_whence, l_start, l_len, l_pid
OFF_COUNTER = 64
LOCK_START, LOCK_LEN = 64, 8  # the byte range the fcntl lock covers: the counter
# The creator's life lock: an fcntl write lock on the header (bytes 0-63), taken before the header is written and held
# until the creator dies (the kernel drops it then, in any pid namespace). Whoever can take it proves the
# creator gone, and only then may remove its objects (stale.py; docs/RING.md, "Objects and names").
LIFE_START, LIFE_LEN = 0, OFF_COUNTER  # bytes 0-63; never overlapping the counter lock (64-71)
OFF_JVALID = 76
OFF_JCOUNTER = 80
OFF_JWORKER = 88
OFF_JCOUNTED = 96
# worker slot fields
S_PID, S_GEN, S_COUNTED, S_BUSY, S_READY = 0, 4, 8, 24, 32  # offset 16: reserved (docs/RING.md)


class Control:
    """A mapping of the control segment. ``Control.create`` (master) or ``Control.attach`` (worker)."""

    def __init__(self, name: str, mm: mmap.mmap, fd: int):
        self.name = name
        self._mm = mm
        # Kept open for the life of this mapping: it carries the lock, and closing any descriptor of the
        # segment would drop every fcntl lock this process holds on it.
        self._fd = fd
        self._threads = threading.Lock()
        self._view = memoryview(mm)
        self._u64 = self._view.cast("Q")
        self._u32 = self._view.cast("I")
        magic, version, self.nworkers, self.master_pid, stride = _HDR.unpack_from(mm, 0)
        if magic != MAGIC or version != VERSION or stride != SLOT_STRIDE:
            raise RuntimeError(f"{name}: not a shmfetch control segment of version {VERSION}")

    @classmethod
    def create(cls, name: str, nworkers: int) -> Control:
        """A new control segment, its life lock held by this process from before its header is written."""
        size = SLOTS_OFFSET + nworkers * SLOT_STRIDE
        mm, fd = create_segment(name, size, keep_fd=True)  # allocated in full: see segment.py
        try:
            # Blocking: a stale-object sweep may hold it for the instant it takes to look at our header.
            fcntl.lockf(fd, fcntl.LOCK_EX, LIFE_LEN, LIFE_START)
        except BaseException:
            mm.close()
            os.close(fd)
            posix_ipc.unlink_shared_memory(name)
            raise
        _HDR.pack_into(mm, 0, MAGIC, VERSION, nworkers, os.getpid(), SLOT_STRIDE)
        return cls(name, mm, fd)

    @classmethod
    def create_fresh(cls, make_name: Callable[[], str], nworkers: int) -> Control:
        """``create`` under a name from ``make_name``, drawing another while the one drawn exists."""
        return names.create_fresh(make_name, lambda name: cls.create(name, nworkers))

    @classmethod
    def attach(cls, name: str) -> Control:
        shm = posix_ipc.SharedMemory(name)
        try:
            mm = mmap.mmap(shm.fd, shm.size)
        except BaseException:
            shm.close_fd()
            raise
        return cls(name, mm, shm.fd)

    # -- fields ---------------------------------------------------------------------------------------
    # Every shared word is one aligned load or store of its full width, through u64 / u32 views of the
    # mapping, as ring.py does: struct.pack_into zero-fills before it writes, and unpack_from need not load
    # a word at once, so a reader racing a writer could see a torn value (docs/RING.md, "Control segment").

    def _get64(self, off: int) -> int:
        return self._u64[off >> 3]

    def _set64(self, off: int, v: int) -> None:
        self._u64[off >> 3] = v

    def _get32(self, off: int) -> int:
        return self._u32[off >> 2]

    def _set32(self, off: int, v: int) -> None:
        self._u32[off >> 2] = v

    @property
    def counter(self) -> int:
        """URLs downloaded successfully. Readers need no lock: an aligned 8-byte field is read whole."""
        return self._get64(OFF_COUNTER)

    def slot(self, index: int, field: int, size: int = 8) -> int:
        off = SLOTS_OFFSET + index * SLOT_STRIDE + field
        return self._get64(off) if size == 8 else self._get32(off)

    def set_slot(self, index: int, field: int, value: int, size: int = 8) -> None:
        off = SLOTS_OFFSET + index * SLOT_STRIDE + field
        (self._set64 if size == 8 else self._set32)(off, value)

    def init_slot(self, index: int, pid: int, generation: int) -> None:
        """Master: a new worker process takes slot ``index``; its per-process tallies start at zero."""
        base = SLOTS_OFFSET + index * SLOT_STRIDE
        for off in range(base, base + SLOT_STRIDE, 8):  # word by word: stats reads these meanwhile
            self._set64(off, 0)
        self._set32(base + S_PID, pid)
        self._set32(base + S_GEN, generation)

    # -- the lock -------------------------------------------------------------------------------------

    def _take(self, blocking: bool) -> bool:
        """Take the lock (this process's threads first, then the fcntl record lock), and undo the
        increment a dead holder left half done. False if ``blocking`` is off and someone holds it."""
        if not self._threads.acquire(blocking):
            return False
        try:
            op = fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
            fcntl.lockf(self._fd, op, LOCK_LEN, LOCK_START)
        except OSError as e:
            self._threads.release()
            if not blocking and e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        except BaseException:
            self._threads.release()
            raise
        self._roll_back_half_done()
        return True

    def _release(self) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, LOCK_LEN, LOCK_START)
        finally:
            self._threads.release()

    @contextlib.contextmanager
    def locked(self, blocking: bool = True) -> Iterator[bool]:
        """``with ctl.locked() as got:`` holds the counter lock inside (``got`` False: not taken, only
        possible with ``blocking=False``)."""
        got = self._take(blocking)
        try:
            yield got
        finally:
            if got:
                self._release()

    def lock_holder(self) -> int | None:
        """The pid of another process holding the lock now (the kernel's answer, F_GETLK), or None."""
        probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, LOCK_START, LOCK_LEN, 0)
        l_type, _, _, _, pid = _FLOCK.unpack(fcntl.fcntl(self._fd, fcntl.F_GETLK, probe))
        return None if l_type == fcntl.F_UNLCK else pid

    def _roll_back_half_done(self) -> None:
        # Under the lock a valid journal can only be a dead holder's: a live one clears it before releasing.
        if self._get32(OFF_JVALID):
            self._set64(OFF_COUNTER, self._get64(OFF_JCOUNTER))
            jw = self._get32(OFF_JWORKER)
            self._set64(SLOTS_OFFSET + jw * SLOT_STRIDE + S_COUNTED, self._get64(OFF_JCOUNTED))
            self._set32(OFF_JVALID, 0)

    # -- the increment (worker) -----------------------------------------------------------------------

    def increment(self, index: int) -> None:
        """Count one successful download for worker slot ``index``. Call after the result is committed."""
        counted_off = SLOTS_OFFSET + index * SLOT_STRIDE + S_COUNTED
        with self.locked():
            if faults.ACTIVE:
                faults.hit("counter.after_lock")
            old = self._get64(OFF_COUNTER)
            counted = self._get64(counted_off)
            self._set64(OFF_JCOUNTER, old)
            self._set32(OFF_JWORKER, index)
            self._set64(OFF_JCOUNTED, counted)
            self._set32(OFF_JVALID, 1)
            self._set64(OFF_COUNTER, old + 1)
            if faults.ACTIVE:
                faults.hit("counter.in_critical")
            self._set64(counted_off, counted + 1)
            self._set32(OFF_JVALID, 0)

    # -- reconcile (master) ---------------------------------------------------------------------------

    def reconcile(self, index: int, received_ok: int, blocking: bool = True) -> int | None:
        """Master: make the counter include exactly the ``received_ok`` results of the process in slot
        ``index``, which is dead and drained. Returns the correction applied (results committed but not
        yet counted when the process died), or None if ``blocking`` is off and the lock is taken."""
        off = SLOTS_OFFSET + index * SLOT_STRIDE + S_COUNTED
        with self.locked(blocking) as got:
            if not got:
                return None
            delta = received_ok - self._get64(off)
            if delta:
                self._set64(OFF_COUNTER, self._get64(OFF_COUNTER) + delta)
                self._set64(off, received_ok)
            return delta

    def close(self) -> None:
        unmap(self._mm, self._u64, self._u32, self._view)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def unlink(self) -> None:
        try:
            posix_ipc.unlink_shared_memory(self.name)
        except posix_ipc.ExistentialError:
            pass
