"""Names of the POSIX objects a master creates, and removal of those left by masters that died.

Every name carries the creating master's pid (docs/RING.md, "Objects and names"). Ownership is judged by
the pid alone, never by a command line: an object whose pid names no live process belongs to nobody and
may be unlinked; an object whose pid is alive is left alone, whoever that process is.
"""

from __future__ import annotations

import os
import re

PREFIX = "shmfetch"
SHM_DIR = "/dev/shm"
_OWNED = re.compile(rf"^(?:sem\.)?{PREFIX}\.(\d+)\.")


def control_name(master_pid: int) -> str:
    return f"/{PREFIX}.{master_pid}.ctl"


def ring_name(master_pid: int, index: int, generation: int, kind: str) -> str:
    return f"/{PREFIX}.{master_pid}.w{index}.g{generation}.{kind}"


def pid_alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie: a process that has exited stays a zombie until its parent
    (a shell, a supervisor, a test) reaps it, and kill(pid, 0) still succeeds on a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, and someone else's
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False  # /proc entry gone: it was reaped between the two checks


def owner_pid(entry: str) -> int | None:
    """The creating pid in a /dev/shm entry's name, or None if it is not a shmfetch object."""
    m = _OWNED.match(entry)
    return int(m.group(1)) if m else None


def owned_by(pid: int) -> list[str]:
    """Files in /dev/shm that belong to master ``pid`` (segments and semaphores)."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if owner_pid(e) == pid)


def remove_stale(me: int | None = None) -> list[str]:
    """Unlink the objects whose creating process is gone. Returns what was removed.

    ``me`` is the calling master's pid: objects named with it are stale too, because a master calls this
    before it creates anything, so they were left by an earlier process that had the same pid (pids are
    reused, quickly so in containers).
    """
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        pid = owner_pid(entry)
        if pid is not None and (pid == me or not pid_alive(pid)):
            try:
                os.unlink(os.path.join(SHM_DIR, entry))
                removed.append(entry)
            except (FileNotFoundError, PermissionError):
                pass
    return sorted(removed)
