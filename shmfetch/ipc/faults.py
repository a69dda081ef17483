"""Fault injection for the crash-point tests: kill this process at one named step of a protocol.

A test sets ``SHMFETCH_FAULT=POINT[:N[:MARKER[:ACTION]]]`` in the daemon's environment. Only a process that calls
``arm_from_env()`` at start (the worker does) reads it, once; elsewhere, and whenever the variable is unset,
``ACTIVE`` stays False and a fault site costs one attribute load and a branch:

    if faults.ACTIVE:
        faults.hit("ring.put.after_head")

``hit(POINT)`` SIGKILLs the process on the N-th time (default 1) that POINT is reached. With MARKER (a file
path), the fault fires only if it can create MARKER exclusively first, so it fires once per test across
every worker and every respawned generation, instead of killing each new worker again.

ACTION is ``kill`` (the default: SIGKILL), ``stop`` (SIGSTOP: the process stays where it is, holding
whatever it holds, until a test or the master kills it; for "a live holder that never returns"), ``segv``
(SIGSEGV: a crash in native code, as a broken wheel gives) or ``raise`` (``InjectedFault``: an unexpected
exception at that point, for "a bug there is survived").

Point names are listed in docs/RING.md ("Crash points"); a site names its own point.
"""

from __future__ import annotations

import os
import signal

ENV = "SHMFETCH_FAULT"

ACTIVE = False
_point = ""
_left = 0
_marker: str | None = None
_signal: signal.Signals | None = signal.SIGKILL
_ACTIONS: dict[str, signal.Signals | None] = {
    "kill": signal.SIGKILL,
    "stop": signal.SIGSTOP,
    "segv": signal.SIGSEGV,
    "raise": None,
}


class InjectedFault(RuntimeError):
    """What ``hit`` raises with ACTION ``raise``: a bug at that point, for the tests of what catches it."""


def arm_from_env() -> None:
    """Read ``SHMFETCH_FAULT`` once. Call at process start, before any fault site can run."""
    global ACTIVE, _point, _left, _marker, _signal
    spec = os.environ.get(ENV)
    if not spec:
        return
    parts = spec.split(":", 3)
    _point = parts[0]
    _left = int(parts[1]) if len(parts) > 1 and parts[1] else 1
    _marker = parts[2] if len(parts) > 2 and parts[2] else None
    _signal = _ACTIONS[parts[3]] if len(parts) > 3 else signal.SIGKILL
    ACTIVE = True


def hit(point: str) -> None:
    """Die (or stop) here if this is the armed point and its count is reached."""
    global _left, ACTIVE
    if point != _point:
        return
    _left -= 1
    if _left > 0:
        return
    ACTIVE = False
    if _marker is not None:
        try:
            os.close(os.open(_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return  # already fired once in this test (another worker, or an earlier generation)
    if _signal is None:
        raise InjectedFault(f"injected fault at {point}")
    os.kill(os.getpid(), _signal)
