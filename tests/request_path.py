"""Scaffolding for the unit tests of the master's request path (intake, frontier, dispatcher, collector):
real rings in /dev/shm, real objects, a sink that keeps what it is answered. Nothing here is a mock: the
dispatcher writes real request rings and reads real result records."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Iterator
from typing import Any

import msgpack

from shmfetch.config import Config
from shmfetch.dispatch.dispatcher import Dispatcher
from shmfetch.dispatch.handle import WorkerHandle
from shmfetch.frontier.admission import Frontier
from shmfetch.ipc.ring import Ring
from shmfetch.protocol import Outcome, pack_result, unpack

_serial = itertools.count()


class Recorder:
    """A client that keeps every answer (``job.answer`` hands it the frame with str values)."""

    def __init__(self) -> None:
        self.closed = False
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def by_id(self) -> dict[Any, dict[str, Any]]:
        return {f["id"]: f for f in self.frames}


def ring_name(kind: str) -> str:
    """A unique name this test run owns (conftest's leftover check matches shmfetch_unit.PID.)."""
    return f"shmfetch_unit.{os.getpid()}.{next(_serial)}.{kind}"


@contextlib.contextmanager
def worker_rings(n: int, req_slots: int = 64, slot_size: int = 256) -> Iterator[list[WorkerHandle]]:
    """``n`` live worker handles on real request and result rings, unlinked at the end."""
    rings: list[Ring] = []
    try:
        handles = []
        for i in range(n):
            rings.append(Ring.create(ring_name("req"), req_slots, slot_size))
            rings.append(Ring.create(ring_name("res"), 16, 4096))
            w = WorkerHandle(i, 1, rings[-2], rings[-1])
            w.pid, w.alive = 0, True
            handles.append(w)
        yield handles
    finally:
        for r in rings:
            r.close()
            r.unlink()


def make_dispatcher(
    loop: asyncio.AbstractEventLoop, workers: list[WorkerHandle], cfg: Config | None = None, **kw: Any
) -> Dispatcher:
    """A Dispatcher with its real Frontier, the given workers attached."""
    cfg = cfg or Config()
    kw.setdefault("max_pending", 1000)
    kw.setdefault("max_inflight", 64)
    kw.setdefault("threads", 64)
    d = Dispatcher(loop, len(workers), make_frontier=lambda fail, pump: Frontier(cfg, loop, fail, pump), **kw)
    for w in workers:
        d.attach(w)
    return d


def taken(w: WorkerHandle) -> list[list[Any]]:
    """Every request waiting in ``w``'s request ring, taken as a worker would: [ticket, url, options]."""
    out = []
    while w.req.positions()[0] != w.req.positions()[1]:
        out.append(w.req.get(unpack, timeout=1))
    return out


def record(ticket: int, **outcome: Any) -> list[Any]:
    """A result record as the collector hands it over: the worker's packing, read back with raw=True."""
    outcome.setdefault("ok", True)
    return msgpack.unpackb(pack_result(ticket, Outcome(**outcome)), raw=True)
