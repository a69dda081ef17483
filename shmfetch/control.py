"""The control segment: the shared download counter, its lock, and one slot per worker.

Layout and the crash-repair argument are in docs/RING.md ("Control segment"). The lock is a POSIX
semaphore, which has no SEM_UNDO, so every increment is journalled: the holder's pid and the values before
the increment are written first, and the master, after reaping a dead holder, undoes a half-done increment
as a whole and releases the lock (``repair_after``), then makes the counter agree with the results it
actually received from that process (``reconcile``).
"""

from __future__ import annotations

import mmap
import os
import struct

import posix_ipc

from .ring import acquire
from .segment import create_segment

MAGIC = b"SHMFCTRL"
VERSION = 1
SLOT_STRIDE = 64
SLOTS_OFFSET = 128

_HDR = struct.Struct("<8sIIII")  # magic, version, nworkers, master_pid, slot_stride
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
OFF_COUNTER = 64
OFF_HOLDER = 72
OFF_JVALID = 76
OFF_JCOUNTER = 80
OFF_JWORKER = 88
OFF_JCOUNTED = 96
# worker slot fields
S_PID, S_GEN, S_COUNTED, S_BUSY = 0, 4, 8, 24  # offset 16: reserved (docs/RING.md)


class Control:
    """A mapping of the control segment. ``Control.create`` (master) or ``Control.attach`` (worker)."""

    def __init__(self, name: str, mm: mmap.mmap, lock: posix_ipc.Semaphore):
        self.name = name
        self._mm = mm
        self.lock = lock
        magic, version, self.nworkers, self.master_pid, stride = _HDR.unpack_from(mm, 0)
        if magic != MAGIC or version != VERSION or stride != SLOT_STRIDE:
            raise RuntimeError(f"{name}: not a shmfetch control segment of version {VERSION}")

    @classmethod
    def create(cls, name: str, nworkers: int) -> Control:
        size = SLOTS_OFFSET + nworkers * SLOT_STRIDE
        mm = create_segment(name, size)
        _HDR.pack_into(mm, 0, MAGIC, VERSION, nworkers, os.getpid(), SLOT_STRIDE)
        try:
            lock = posix_ipc.Semaphore(name + ".lock", posix_ipc.O_CREX, 0o600, 1)
        except BaseException:
            posix_ipc.unlink_shared_memory(name)
            raise
        return cls(name, mm, lock)

    @classmethod
    def attach(cls, name: str) -> Control:
        shm = posix_ipc.SharedMemory(name)
        try:
            mm = mmap.mmap(shm.fd, shm.size)
        finally:
            shm.close_fd()
        return cls(name, mm, posix_ipc.Semaphore(name + ".lock"))

    # -- fields ---------------------------------------------------------------------------------------

    def _get64(self, off: int) -> int:
        return _U64.unpack_from(self._mm, off)[0]

    def _set64(self, off: int, v: int) -> None:
        _U64.pack_into(self._mm, off, v)

    def _get32(self, off: int) -> int:
        return _U32.unpack_from(self._mm, off)[0]

    def _set32(self, off: int, v: int) -> None:
        _U32.pack_into(self._mm, off, v)

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
        self._mm[base : base + SLOT_STRIDE] = bytes(SLOT_STRIDE)
        self._set32(base + S_PID, pid)
        self._set32(base + S_GEN, generation)

    # -- the increment (worker) -----------------------------------------------------------------------

    def increment(self, index: int) -> None:
        """Count one successful download for worker slot ``index``. Call after the result is committed."""
        pid = os.getpid()
        counted_off = SLOTS_OFFSET + index * SLOT_STRIDE + S_COUNTED
        acquire(self.lock)
        try:
            self._set32(OFF_HOLDER, pid)
            old = self._get64(OFF_COUNTER)
            counted = self._get64(counted_off)
            self._set64(OFF_JCOUNTER, old)
            self._set32(OFF_JWORKER, index)
            self._set64(OFF_JCOUNTED, counted)
            self._set32(OFF_JVALID, 1)
            self._set64(OFF_COUNTER, old + 1)
            self._set64(counted_off, counted + 1)
            self._set32(OFF_JVALID, 0)
            self._set32(OFF_HOLDER, 0)
        finally:
            self.lock.release()

    # -- repair (master) ------------------------------------------------------------------------------

    def repair_after(self, dead_pid: int, stuck_timeout: float = 1.0) -> bool:
        """Master, after waitpid() reaped ``dead_pid``: free the lock if that process died holding it.

        Returns True if a repair was needed.
        """
        if self._get32(OFF_HOLDER) == dead_pid:
            if self._get32(OFF_JVALID):
                self._set64(OFF_COUNTER, self._get64(OFF_JCOUNTER))
                jw = self._get32(OFF_JWORKER)
                self._set64(SLOTS_OFFSET + jw * SLOT_STRIDE + S_COUNTED, self._get64(OFF_JCOUNTED))
                self._set32(OFF_JVALID, 0)
            self._set32(OFF_HOLDER, 0)
            self.lock.release()
            return True
        if self._get32(OFF_HOLDER) == 0 and self.lock.value == 0:
            # Taken but no holder recorded: the dead process was between sem_wait and storing its pid,
            # or a live worker is in the middle of a microsecond-long increment. Time tells them apart.
            try:
                acquire(self.lock, stuck_timeout)
            except posix_ipc.BusyError:
                self.lock.release()
                return True
            self.lock.release()
        return False

    def reconcile(self, index: int, received_ok: int) -> int:
        """Master: make the counter include exactly the ``received_ok`` results of the process in slot
        ``index``, which is dead and drained. Returns the correction applied (results committed but not
        yet counted when the process died)."""
        off = SLOTS_OFFSET + index * SLOT_STRIDE + S_COUNTED
        acquire(self.lock)
        try:
            delta = received_ok - self._get64(off)
            if delta:
                self._set64(OFF_COUNTER, self._get64(OFF_COUNTER) + delta)
                self._set64(off, received_ok)
            return delta
        finally:
            self.lock.release()

    def close(self) -> None:
        try:
            self._mm.close()
        except BufferError:
            pass
        try:
            self.lock.close()
        except posix_ipc.ExistentialError:
            pass

    def unlink(self) -> None:
        for fn, n in (
            (posix_ipc.unlink_shared_memory, self.name),
            (posix_ipc.unlink_semaphore, self.name + ".lock"),
        ):
            try:
                fn(n)
            except posix_ipc.ExistentialError:
                pass
