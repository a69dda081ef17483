"""The ``stats`` document: what ``shmfetch stats``, the HTTP ``/stats`` and ``/metrics`` show.

Built on demand from the master's parts (dispatcher, supervisor, control segment, fronts); it reads
them and changes nothing. docs/OPERATIONS.md describes every field.
"""

from __future__ import annotations

import time
from typing import Any

from .._version import __version__
from ..dispatch.dispatcher import Dispatcher
from ..ipc.control import S_BUSY, S_READY, Control
from .supervisor import Supervisor


def worker_entries(supervisor: Supervisor, dispatcher: Dispatcher, ctl: Control) -> list[dict[str, Any]]:
    """One entry per worker slot, in slot order."""
    workers = []
    for i, w in enumerate(dispatcher.handles()):
        workers.append(
            {
                "index": i,
                "pid": w.pid if w else None,
                "alive": bool(w and w.alive),
                "ready": bool(w and w.alive and ctl.slot(i, S_READY, 4)),  # booted, serving
                "generation": supervisor.generations[i],
                "restarts": supervisor.restarts[i],
                # Counted by the master as results arrive, so a client that has its answers sees
                # them all here (the worker's own slot is written a moment after the commit).
                "served": supervisor.served_before[i] + (w.served if w else 0),
                "served_by_pid": w.served if w else 0,
                "in_flight": len(w.outstanding) if w else 0,
                "queued": max(0, len(w.outstanding) - ctl.slot(i, S_BUSY)) if w else 0,
                "resource_failures": supervisor.resource_failures[i],
                "respawn_blocked": supervisor.blocked[i],  # why its respawn waits for room, or None
            }
        )
    return workers


def document(
    *,
    pid: int,
    started: float,
    downloaded: int,
    stopping: bool,
    log_dropped: int,
    dispatcher: Dispatcher,
    supervisor: Supervisor,
    ctl: Control,
    fronts: dict[str, Any],
    request_caps: dict[str, Any],
) -> dict[str, Any]:
    """The whole document. ``fronts``: the ``listener``, and the ``http`` and ``cluster`` fronts or None,
    and the ``crawls`` (shmfetch/crawl: active and started)."""
    d = dispatcher
    listener, http, cluster = fronts["listener"], fronts.get("http"), fronts.get("cluster")
    return {
        "pid": pid,
        "version": __version__,
        # the bounds of per-request options, so that a client checks them before sending (cli)
        "request_caps": request_caps,
        "uptime_s": round(time.monotonic() - started, 3),
        "downloaded": downloaded,
        "ok_delivered": d.ok_total,
        "failures": dict(d.failures),
        "in_flight": d.inflight(),
        "pending": d.queued(),
        "dispatched": d.dispatched(),
        "retries": d.retries(),
        "pages_per_s_10s": round(d.rate(10), 3),
        "pages_per_s_60s": round(d.rate(60), 3),
        "connections": len(listener.connections),
        "http_connections": len(http.connections) if http is not None else 0,
        "stopping": stopping,
        "log_dropped": log_dropped,
        "resource_failures": sum(supervisor.resource_failures),
        "workers": worker_entries(supervisor, d, ctl),
        "frontier": d.frontier_stats(),
        "cluster": cluster.stats() if cluster is not None else None,
        "crawls": crawls.stats() if (crawls := fronts.get("crawls")) is not None else None,
    }
