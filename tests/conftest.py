"""Shared fixtures. Every test must leave /dev/shm and the process table as it found them.

The checks are hermetic: they look only at what this test run created (objects named with this process's
pid or with the pid of a daemon the test started, and this process's own children), so the suite passes
while other shmfetch daemons, or another copy of the suite, run on the same machine.
"""

from __future__ import annotations

import faulthandler
import multiprocessing.resource_tracker
import os
import re
import sys

import pytest

from shmfetch.ipc import names
from shmfetch.testing.daemon import started_pids
from shmfetch.testing.origin import Origin
from shmfetch.testing.redis_server import RedisServer

from .helpers import PAGES_DIR

# Test objects are named like the daemon's (shmfetch.PID.…), plus shmfetch_itest.PID.… for the C interop.
_TEST_OWNED = re.compile(r"^(?:sem\.)?shmfetch[a-z_]*\.(\d+)\.")


def _ours() -> set[str]:
    """/dev/shm entries created by this process or by a process a test of this run started."""
    mine = started_pids | {os.getpid()}
    try:
        entries = os.listdir(names.SHM_DIR)
    except FileNotFoundError:
        return set()
    return {e for e in entries if (m := _TEST_OWNED.match(e)) and int(m.group(1)) in mine}


def _live_children() -> dict[int, str]:
    """This process's children that are still running (not zombies), with their command lines."""
    me = os.getpid()
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and fields[0] not in ("Z", "X"):
            out[int(d)] = cmd
    return out


@pytest.fixture(scope="session", autouse=True)
def _resource_tracker():
    # multiprocessing starts its resource tracker on first use and keeps it for the session; start it up
    # front so that no test sees it appear as a child that test left behind.
    multiprocessing.resource_tracker.ensure_running()
    yield


# A backstop for blocking calls that lack their own bound (a ring put, a join): a test still running
# after TEST_LIMIT is stuck, so dump every thread's stack and end the run rather than hang a CI job.
TEST_LIMIT = 600.0


@pytest.fixture(autouse=True)
def bounded_test():
    faulthandler.dump_traceback_later(TEST_LIMIT, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail any test that leaves its shared objects or child processes behind."""
    before = _ours()
    kids_before = set(_live_children())
    yield
    leaked = _ours() - before
    assert not leaked, f"test left shared objects behind: {sorted(leaked)}"
    kids = {p: c for p, c in _live_children().items() if p not in kids_before}
    assert not kids, f"test left child processes behind: {kids}"


@pytest.fixture(scope="session")
def origin():
    o = Origin(pages_dir=PAGES_DIR)
    yield o
    o.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server of this test's own (shmfetch/testing/redis_server.py), stopped afterwards."""
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
