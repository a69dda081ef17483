"""Collectors: one thread per result ring, bringing a worker's results to the master's event loop.

Semaphores are not selectable, so a collector blocks in the ring's ``get_many`` (the GIL released in the
kernel), takes up to ``COLLECT_BATCH`` records that are already there, and hands the batch to the loop with
one ``call_soon_threadsafe`` (docs/RING.md, "Wake-up path in the master"). It ends when the ring is closed
and drained, and then sets ``w.drained``; that is the only thing the master waits for from it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from ..ipc.ring import RingClosed
from .handle import WorkerHandle

log = logging.getLogger("shmfetch.master")

COLLECT_BATCH = 64


def _unpack_raw(buf: Any) -> Any:
    # Strings stay UTF-8 bytes: the master only forwards a result's text (job.answer). Malformed msgpack
    # still raises here, in the collector, which has the worker killed.
    return msgpack.unpackb(buf, raw=True)


def start_collector(
    w: WorkerHandle,
    loop: asyncio.AbstractEventLoop,
    on_batch: Callable[[WorkerHandle, list[Any]], None],
    on_corrupt: Callable[[WorkerHandle], None] | None,
) -> None:
    """Start the collector thread of ``w``'s result ring; ``on_batch``/``on_corrupt`` run on ``loop``."""
    w.collector = threading.Thread(
        target=_collect, args=(w, loop, on_batch, on_corrupt), name=f"collect-{w.index}", daemon=True
    )
    w.collector.start()


def _collect(
    w: WorkerHandle,
    loop: asyncio.AbstractEventLoop,
    on_batch: Callable[[WorkerHandle, list[Any]], None],
    on_corrupt: Callable[[WorkerHandle], None] | None,
) -> None:
    res = w.res
    call = loop.call_soon_threadsafe
    try:
        while True:
            try:
                batch = res.get_many(_unpack_raw, COLLECT_BATCH)
            except RingClosed:
                break
            call(on_batch, w, batch)
    except Exception:
        # A record we cannot read means the ring is not what the layout says: trust nothing more from
        # this generation. The worker is killed and respawned on fresh rings; its unanswered jobs are
        # re-dispatched like after any crash.
        log.exception("worker %d: unreadable result ring %s; killing the worker", w.index, res.name)
        if on_corrupt is not None:
            call(on_corrupt, w)
    call(w.drained.set)
