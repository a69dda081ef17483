"""A live process that holds the counter lock and never lets go must not stop the master.

A worker is SIGSTOPped inside the counter's critical section (the ``stop`` action of the fault hook: the
lock stays held by a live process), then another worker crashes, so the master has a count to reconcile.
The master must keep answering ``stats`` and must still stop on SIGUSR1, with the count exact.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from shmfetch import Client
from shmfetch.ipc import faults

from .helpers import page_text, running_daemon, wait_for


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.slow
def test_stopped_lock_holder_plus_a_crash_leaves_stats_and_sigusr1_working(tmp_path, origin, monkeypatch):
    marker = tmp_path / "fired"
    monkeypatch.setenv(faults.ENV, f"counter.in_critical:1:{marker}:stop")
    drain = 3
    with running_daemon(tmp_path, daemon={"workers": 2, "drain_timeout": drain}) as d:
        with Client(d.socket, timeout=20) as c:
            r = c.fetch(origin.url("/page/1"))  # committed, then its worker stops inside the increment
        assert r.ok and r.text == page_text(1)
        wait_for(marker.exists, 10, "the fault to fire")
        holder = wait_for(lambda: next((p for p in d.worker_pids() if _state(p) == "T"), None), 10, "a stop")
        (other,) = [p for p in d.worker_pids() if p != holder]
        os.kill(other, signal.SIGKILL)  # the master must now reconcile while the lock stays held
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with Client(d.socket, timeout=1.0) as c:  # raises TimeoutError if the master does not answer
                st = c.stats()
            assert st["downloaded"] <= 1
        assert _state(holder) == "T", "the holder must still hold the lock when the stop is asked"
        t0 = time.monotonic()
        rc, _ = d.stop(timeout=drain + 10)
        took = time.monotonic() - t0
    assert rc == 0
    assert took < drain + 2, took
    assert d.last_line() == "downloaded 1 URLs"
    assert _state(holder) == "gone"
