"""The worker process survives its own bugs: a request it fails on is answered, and its thread serves on."""

from __future__ import annotations

import time

import pytest

from shmfetch import Client
from shmfetch.ipc import faults

from .helpers import (
    origin_fixture,  # noqa: F401 (origin is a fixture)
    running_daemon,
)

SLOW = 2.0  # seconds each of the two concurrent fetches takes at the origin


@pytest.mark.slow
def test_an_exception_after_the_take_answers_internal_error_and_the_thread_serves_on(
    tmp_path, origin, monkeypatch
):
    # One worker, two fetch threads. A thread that died of the exception would leave its request
    # unanswered while the other thread keeps the worker alive (so nothing re-dispatches it), and
    # the worker would serve one request at a time from then on.
    marker = tmp_path / "fired"
    monkeypatch.setenv(faults.ENV, f"worker.after_take:1:{marker}:raise")
    with running_daemon(tmp_path, daemon={"workers": 1, "threads": 2}) as d:
        pids = d.worker_pids()
        with Client(d.socket, timeout=10) as c:
            failed = c.fetch(origin.url("/page/1"))
            t0 = time.monotonic()
            both = list(c.fetch_many([origin.url(f"/slow?s={SLOW}&n={i}") for i in range(2)], concurrency=2))
            took = time.monotonic() - t0
        assert d.worker_pids() == pids  # the same worker: nothing was respawned
        log = d.stderr
    assert marker.exists()
    assert (failed.ok, failed.error) == (False, "internal_error")
    assert failed.message == "the worker failed on this request: injected fault at worker.after_take"
    assert [r.ok for r in both] == [True, True]
    assert took < 2 * SLOW - 0.3, f"the two fetches took {took:.2f} s: one thread serves"
    assert "InjectedFault" in log  # the traceback is in the log, for the developer
