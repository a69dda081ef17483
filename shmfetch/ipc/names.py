"""Names of the POSIX objects a master creates.

A master's objects all start with ``shmfetch.PID.INSTANCE.``: its pid, for people reading /dev/shm and for
tests, and a random instance token, so that two masters with one pid (each pid 1 in its own container,
sharing /dev/shm) never share a name. Its rings add a fresh random token of their own to each name, so
that no name of a future ring can be guessed, by anyone who lists /dev/shm, in time to take it first; a
name that exists anyway is drawn again (``create_fresh``). docs/RING.md, "Objects and names", is the
specification. Which of those objects are stale is decided by a lock, never by a pid: see stale.py.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from typing import TypeVar

import posix_ipc

PREFIX = "shmfetch"
SHM_DIR = "/dev/shm"
TOKEN_HEX = 16  # 64 random bits, as hex
FRESH_ATTEMPTS = 8  # names drawn before a creation gives up (a collision by chance is 1 in 2**64)
_OWNED = re.compile(rf"^(?:sem\.)?{PREFIX}\.(\d+)\.")
_INSTANCE = re.compile(rf"^(?:sem\.)?({PREFIX}\.\d+\.[0-9a-f]{{{TOKEN_HEX}}}\.)")

T = TypeVar("T")


def new_token() -> str:
    return secrets.token_hex(TOKEN_HEX // 2)


def control_name(master_pid: int) -> str:
    """A new control segment name for master ``master_pid``, with a new instance token."""
    return f"/{PREFIX}.{master_pid}.{new_token()}.ctl"


def ring_name(control: str, index: int, generation: int, kind: str) -> str:
    """A new name for a ring of the master whose control segment is ``control``: its instance prefix, the
    worker slot and generation (for people), and a token of its own."""
    return f"{control.removesuffix('ctl')}w{index}.g{generation}.{new_token()}.{kind}"


def instance_prefix(entry: str) -> str | None:
    """``shmfetch.PID.INSTANCE.`` of a /dev/shm entry (segment or semaphore), or None if the entry is not
    an object of a master of this naming."""
    m = _INSTANCE.match(entry)
    return m.group(1) if m else None


def create_fresh(make_name: Callable[[], str], create: Callable[[str], T]) -> T:
    """``create(make_name())``, drawing a new name each time the one drawn exists already (someone else
    made it: a guess, or a process of another user). A name taken is never a failure of ours."""
    for _ in range(FRESH_ATTEMPTS - 1):
        try:
            return create(make_name())
        except posix_ipc.ExistentialError:
            continue
    return create(make_name())


def pid_alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie: a process that has exited stays a zombie until its parent
    (a shell, a supervisor, a test) reaps it, and kill(pid, 0) still succeeds on a zombie. Only meaningful
    for a process of this pid namespace: never used to judge whose shared objects are stale."""
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
    """Files in /dev/shm named with master pid ``pid`` (segments and semaphores), for tests and tools."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if owner_pid(e) == pid)
