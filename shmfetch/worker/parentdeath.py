"""PR_SET_PDEATHSIG for a worker, in a module of its own so that it runs before any heavy import.

A worker is ``python -m shmfetch.worker``: Python imports the package, then the worker module, and the
worker module pulls in requests and lxml (a few hundred ms, seconds on a loaded box). A master killed in
that window must not leave the worker behind, so the worker asks the kernel for SIGKILL on its parent's
death first of all, from here (this module imports only the standard library).
"""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
