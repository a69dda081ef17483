"""Shared fixtures. Every test must leave /dev/shm and the process table as it found them."""

from __future__ import annotations

import os

import pytest

from shmfetch import names

from .helpers import Origin


def _shm_entries() -> set[str]:
    try:
        return {e for e in os.listdir(names.SHM_DIR) if names.PREFIX in e}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail any test that leaves shmfetch segments/semaphores or child processes behind."""
    before = _shm_entries()
    yield
    leaked = _shm_entries() - before
    assert not leaked, f"test left shared objects behind: {sorted(leaked)}"
    kids = _live_children()
    assert not kids, f"test left child processes behind: {kids}"


def _live_children() -> list[str]:
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z" and "shmfetch" in cmd:
            out.append(f"{d}: {cmd}")
    return out


@pytest.fixture(scope="session")
def origin():
    o = Origin()
    yield o
    o.stop()
