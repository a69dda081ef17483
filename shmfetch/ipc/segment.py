"""Creating a POSIX shared-memory segment whose every page is really there.

``shm_open`` + ``ftruncate`` only sets a size: tmpfs hands out pages on first touch, and when /dev/shm is
full that first touch is a SIGBUS, in whichever process writes first, long after the segment was
"created". So a segment is allocated in full with ``posix_fallocate`` when it is created, and a /dev/shm
too small for it is an error there and then, with the figures an operator needs.
"""

from __future__ import annotations

import errno
import mmap
import os

import posix_ipc

from .names import SHM_DIR


class SharedMemoryFull(OSError):
    """/dev/shm has no room for a segment. The message says how many bytes were needed and how many are free."""


def shm_free_bytes() -> int:
    """Bytes an unprivileged process may still allocate in /dev/shm."""
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize


def create_segment(name: str, size: int, keep_fd: bool = False) -> tuple[mmap.mmap, int | None]:
    """Create segment ``name`` (O_EXCL, mode 0600) of ``size`` bytes, allocated in full, and map it.

    Returns the mapping and, with ``keep_fd``, the segment's open descriptor (the caller closes it; the
    control segment keeps it for its fcntl lock). Raises SharedMemoryFull when it does not fit; the
    segment is then unlinked again.
    """
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
    try:
        try:
            os.posix_fallocate(shm.fd, 0, size)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EFBIG):
                raise
            raise SharedMemoryFull(
                e.errno,
                f"/dev/shm is full: {name} needs {size} bytes, {shm_free_bytes()} bytes are free in {SHM_DIR}",
            ) from None
        mm = mmap.mmap(shm.fd, size)
    except BaseException:
        shm.close_fd()
        posix_ipc.unlink_shared_memory(name)
        raise
    if keep_fd:
        return mm, shm.fd
    shm.close_fd()
    return mm, None


def unmap(mm: mmap.mmap, *views: memoryview) -> None:
    """Release ``views`` of a segment's mapping, then the mapping. A view still exported elsewhere (a
    decode callback kept one) leaves the mapping to go with the process."""
    for view in views:
        view.release()
    try:
        mm.close()
    except BufferError:
        pass
