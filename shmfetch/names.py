"""Names of the POSIX objects a master creates, and removal of those left by masters that died.

Every name carries the creating master's pid (docs/RING.md, "Objects and names"), so an object whose pid
is no longer alive belongs to nobody and may be unlinked.
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


def is_shmfetch(pid: int) -> bool:
    """Alive and a shmfetch process; guards against a recycled pid now used by something else."""
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return PREFIX.encode() in fh.read()
    except OSError:
        return True  # alive but unreadable: assume it is ours rather than delete live objects


def owned_by(pid: int) -> list[str]:
    """Files in /dev/shm that belong to master ``pid`` (segments and semaphores)."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if (m := _OWNED.match(e)) and int(m.group(1)) == pid)


def remove_stale() -> list[str]:
    """Unlink the objects of every shmfetch master that is no longer alive. Returns what was removed."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        m = _OWNED.match(entry)
        if m and not is_shmfetch(int(m.group(1))):
            try:
                os.unlink(os.path.join(SHM_DIR, entry))
                removed.append(entry)
            except (FileNotFoundError, PermissionError):
                pass
    return sorted(removed)
