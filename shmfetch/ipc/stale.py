"""Removal of the shared objects of masters that are gone, proven by a lock the kernel releases.

A pid proves nothing here: ``kill(pid, 0)`` and /proc say "dead" for a live master in another pid
namespace that shares /dev/shm (containers of one pod, ``docker --ipc=shareable``), and two such masters
are often both pid 1. So every master holds the life lock of its control segment (an fcntl write lock on
its header, control.LIFE_START) from before it writes the header until it dies, and an instance's objects
are removed only by a process that takes that lock itself, or when its control segment is gone (a master's
control segment is created before its first ring and unlinked after its last). docs/RING.md, "Objects and
names".
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from . import names
from .control import LIFE_LEN, LIFE_START, MAGIC

# A control segment whose life lock is free but whose header is not written yet belongs to a master that is
# between its create and its lock (microseconds), or that died right there: removed only once this old.
UNWRITTEN_GRACE = 60.0


def remove_stale() -> list[str]:
    """Unlink every object of each master that is provably gone. Returns the entries removed.

    A master calls this before it creates its own control segment (opening and closing a descriptor of a
    segment drops the caller's fcntl locks on it, so it must never look at its own)."""
    try:
        entries = os.listdir(names.SHM_DIR)
    except FileNotFoundError:
        return []
    instances: dict[str, list[str]] = {}
    for entry in entries:
        if (prefix := names.instance_prefix(entry)) is not None:
            instances.setdefault(prefix, []).append(entry)
    removed: list[str] = []
    for prefix, members in sorted(instances.items()):
        fd = _open_control(prefix)
        if fd is None:
            continue
        try:
            if fd < 0 or _master_gone(fd):  # the lock, if taken, is held while its objects go
                removed += _unlink(members)
        finally:
            if fd >= 0:
                os.close(fd)
    return sorted(removed)


def _open_control(prefix: str) -> int | None:
    """A descriptor of the instance's control segment; -1 if there is none; None if it cannot be judged
    (another user's, which we could not unlink either, or not a plain file)."""
    try:
        return os.open(os.path.join(names.SHM_DIR, prefix + "ctl"), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    except OSError:
        return None


def _master_gone(fd: int) -> bool:
    """Take the life lock without waiting: False if a live process holds it. Taken, it proves its master
    gone once the header is written (the master writes it only under the lock)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, LIFE_LEN, LIFE_START)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    if os.pread(fd, len(MAGIC), 0) == MAGIC:
        return True
    st = os.fstat(fd)
    return time.time() - max(st.st_mtime, st.st_ctime) > UNWRITTEN_GRACE


def _unlink(entries: list[str]) -> list[str]:
    gone = []
    for entry in entries:
        try:
            os.unlink(os.path.join(names.SHM_DIR, entry))
            gone.append(entry)
        except (FileNotFoundError, PermissionError):
            pass
    return gone
