"""membarrier(2): the heavy half of the ring's asymmetric fence (docs/RING.md, "Fences").

A ring flagged ``MEMBARRIER`` lets the side that does the work (a position store, then a load of the other
side's sleeping word) skip the fence between the two; the side that is about to sleep pays instead, with
``barrier()``, which makes every CPU running a registered process execute a full memory barrier. In Python
the fence it saves is a locked instruction behind two method calls, once per record on each side.

The kernel delivers that barrier only to processes registered for it, and registration belongs to one
process: a child made by fork() is a new process to the kernel, so it is registered again at fork, here,
if its parent was. Linux >= 4.16 offers the commands used; ``register()`` says False where it does not
(another architecture, an old kernel, a seccomp filter), and rings are then created in fence mode.
"""

from __future__ import annotations

import ctypes
import os

_CMD_QUERY = 0
_CMD_GLOBAL_EXPEDITED = 1 << 1
_CMD_REGISTER_GLOBAL_EXPEDITED = 1 << 2
# __NR_membarrier. Only x86-64 is listed: the Python ring's fence-free fast path relies on x86-64's
# ordering of plain loads and stores (docs/RING.md, "Fences").
_NR = {"x86_64": 324}.get(os.uname().machine)  # os.uname, not the platform module (4 ms to import)

_registered_pid = 0
_syscall = None


def _call(cmd: int) -> int:
    global _syscall
    if _syscall is None:
        _syscall = ctypes.CDLL(None, use_errno=True).syscall
        _syscall.restype = ctypes.c_long
    # syscall() is variadic and reads longs: pass longs, not ints whose upper halves are undefined.
    return _syscall(ctypes.c_long(_NR), ctypes.c_long(cmd), ctypes.c_long(0), ctypes.c_long(0))


def register() -> bool:
    """Register this process for global expedited barriers; True if it is (now or already)."""
    global _registered_pid
    if _registered_pid == os.getpid():
        return True
    if _NR is None:
        return False
    offered = _call(_CMD_QUERY)
    need = _CMD_GLOBAL_EXPEDITED | _CMD_REGISTER_GLOBAL_EXPEDITED
    if offered < 0 or offered & need != need or _call(_CMD_REGISTER_GLOBAL_EXPEDITED) != 0:
        return False
    _registered_pid = os.getpid()
    return True


def barrier() -> None:
    """A full memory barrier on every CPU that runs a registered process, and on this one."""
    if _call(_CMD_GLOBAL_EXPEDITED) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"membarrier: {os.strerror(e)}")


def _after_fork_in_child() -> None:
    if _registered_pid and not register():
        raise OSError("membarrier: a forked child could not register again")


os.register_at_fork(after_in_child=_after_fork_in_child)
