"""The pidfile, and the lock on it that says who owns a daemon's configuration.

A master takes an exclusive ``flock`` on its pidfile before it creates anything, and holds it for its whole
life; the kernel drops the lock when the process dies, however it dies. So "is a daemon running for this
config?" is answered by the lock, never by the pid written in the file (pids are reused) or by a process's
command line (anything can be called shmfetch). Who holds the lock is asked of the kernel (``/proc/locks``),
because the pid in the file is written only after the lock is taken: in between, the file is empty or still
holds a dead owner's pid. ``stop`` signals only a process proven to hold the lock (``signal_holder``),
never the pid merely written in the file.

Every file opened here by a configured path is opened ``O_NOFOLLOW`` and must belong to us: a symlink
planted at the path, or a file another user created there, is refused (``UnsafePath``), never followed or
truncated. The default directory of the socket and pidfile (config.runtime_dir) is created 0700 and
checked the same way (``prepare_runtime_dir``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
from collections.abc import Callable

from ..config import UnsafePath, open_nofollow, runtime_dir


class AlreadyRunning(RuntimeError):
    """Another live process holds the pidfile lock. ``pid`` is that process (None if it cannot be told)."""

    def __init__(self, path: str, pid: int | None):
        who = f"pid {pid}" if pid else "a live process"
        super().__init__(f"shmfetch is already running as {who} (pidfile {path} is locked)")
        self.path = path
        self.pid = pid


def _check_ours(path: str, st: os.stat_result, is_kind: Callable[[int], bool], kind: str) -> None:
    if not is_kind(st.st_mode):
        raise UnsafePath(f"{path} is not {kind}: refusing it")
    if st.st_uid != os.geteuid():
        raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}): refusing it")


def prepare_runtime_dir(path: str) -> None:
    """If ``path`` (the socket or pidfile) lies in the default runtime directory, create that directory
    mode 0700 if missing, and refuse it unless it is a real directory of ours that nobody else can write.
    A path configured elsewhere is the operator's choice and is not checked here."""
    directory = os.path.dirname(os.path.abspath(path))
    if directory != runtime_dir():
        return
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(directory)
    _check_ours(directory, st, stat.S_ISDIR, "a directory")
    if st.st_mode & 0o077:
        raise UnsafePath(
            f"{directory} has mode {stat.S_IMODE(st.st_mode):o}: others may use it; expected 700"
        )


class PidFile:
    """An exclusively locked pidfile holding this process's pid. ``release()`` unlinks it and unlocks."""

    def __init__(self, path: str, fd: int):
        self.path = path
        self.fd = fd

    @classmethod
    def acquire(cls, path: str) -> PidFile:
        """Lock ``path`` (created 0644 if missing) and write our pid into it, or raise AlreadyRunning
        (UnsafePath if it is a symlink or another user's file)."""
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
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
                fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
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
    """The pid of the live process proven to hold ``path``'s lock; 0 when it is locked by a process that
    cannot be named from here (another pid namespace); None when no process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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


def signal_holder(path: str, pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` only if it holds ``path``'s lock, checked after the process is pinned by a
    pidfd, so that a pid freed and reused meanwhile is never signalled. ProcessLookupError otherwise."""
    pidfd = os.pidfd_open(pid)
    try:
        if running_pid(path) != pid:
            raise ProcessLookupError(errno.ESRCH, f"pid {pid} does not hold the lock on {path}")
        signal.pidfd_send_signal(pidfd, sig)
    finally:
        os.close(pidfd)


def _lock_holder(fd: int) -> int | None:
    """The pid holding a flock on ``fd``'s file, proven twice: ``/proc/locks`` names it, and that process
    has the file open. None when no visible process does: the pid written in the file proves nothing
    (it may be a recycled pid, or any pid at all in a file others can write), so it is never used.

    A holder in another pid namespace is not listed in this namespace's /proc/locks.
    """
    st = os.fstat(fd)
    dev_ino = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                # "1: FLOCK  ADVISORY  WRITE 16524 fe:00:2146549 0 EOF"; a blocked waiter's line has "->".
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == dev_ino and int(fields[4]) > 0:
                    pid = int(fields[4])
                    return pid if _has_open(pid, st) else None
    except (OSError, ValueError):
        pass
    return None


def _has_open(pid: int, st: os.stat_result) -> bool:
    """Whether process ``pid`` has a descriptor of the file ``st`` describes."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            other = os.stat(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fs = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fs.st_dev, fs.st_ino)
