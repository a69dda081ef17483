"""The pidfile, and the lock on it that says who owns a daemon's configuration.

A master takes an exclusive ``flock`` on its pidfile before it creates anything, and holds it for its whole
life; the kernel drops the lock when the process dies, however it dies. So "is a daemon running for this
config?" is answered by the lock, never by the pid written in the file (pids are reused) or by a process's
command line (anything can be called shmfetch). Who holds the lock is asked of the kernel (``/proc/locks``),
because the pid in the file is written only after the lock is taken: in between, the file is empty or still
holds a dead owner's pid.
"""

from __future__ import annotations

import errno
import fcntl
import os


class AlreadyRunning(RuntimeError):
    """Another live process holds the pidfile lock. ``pid`` is that process (None if it cannot be told)."""

    def __init__(self, path: str, pid: int | None):
        who = f"pid {pid}" if pid else "a live process"
        super().__init__(f"shmfetch is already running as {who} (pidfile {path} is locked)")
        self.path = path
        self.pid = pid


class PidFile:
    """An exclusively locked pidfile holding this process's pid. ``release()`` unlinks it and unlocks."""

    def __init__(self, path: str, fd: int):
        self.path = path
        self.fd = fd

    @classmethod
    def acquire(cls, path: str) -> PidFile:
        """Lock ``path`` (created 0644 if missing) and write our pid into it, or raise AlreadyRunning."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise AlreadyRunning(path, _lock_holder(fd)) from None
                # The previous owner may have unlinked the file between our open and our lock: then we
                # hold a lock on a name nobody sees. Lock what the path names now, or start over.
                if _same_file(fd, path):
                    break
                os.close(fd)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        """Unlink the file while still holding the lock, then drop the lock. Safe to call twice."""
        if self.fd < 0:
            return
        try:
            if _same_file(self.fd, self.path):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = -1


def running_pid(path: str) -> int | None:
    """The pid of the live daemon that holds ``path``'s lock, or None when no process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _lock_holder(fd) or 0  # locked: alive, even if it cannot be named
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _lock_holder(fd: int) -> int | None:
    """The pid holding a flock on ``fd``'s file, from ``/proc/locks``; else the pid written in the file.

    The file is only a fallback, for a holder in another pid namespace (shown there as pid 0 or not at
    all): it may name a dead previous owner for the instant between the holder's lock and its write.
    """
    st = os.fstat(fd)
    dev_ino = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                # "1: FLOCK  ADVISORY  WRITE 16524 fe:00:2146549 0 EOF"; a blocked waiter's line has "->".
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == dev_ino and int(fields[4]) > 0:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fs = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fs.st_dev, fs.st_ino)
