"""Prometheus metrics: ``GET /metrics`` on the HTTP API, from one custom collector in the master.

The collector reads the master's ``stats()`` (which reads the shared-memory counter and the master's own
figures) at scrape time, so ``/metrics`` and ``shmfetch stats`` show the same numbers by construction.
prometheus_client's multiprocess mode is not used: it breaks custom collectors and needs a directory
wiped between runs, and the master already sees every result.

Names follow prometheus.io/docs/practices/naming; no label carries a URL or a host.

    shmfetch_requests_total{outcome}        answered requests: "ok" or the error code
    shmfetch_fetch_duration_seconds         histogram: dispatch to a worker -> its result, per fetch
    shmfetch_response_bytes_total           body bytes received from origins
    shmfetch_retries_total                  retries: in the worker, after a 429/503 pause, after a crash
    shmfetch_queue_depth                    requests waiting in the master (robots, host gate, credit)
    shmfetch_inflight_requests              requests handed to workers and not answered yet
    shmfetch_workers_alive                  live worker processes
    shmfetch_downloads_total                the SIGUSR1 count (the shared-memory counter)
    shmfetch_respawn_resource_failures_total  worker respawns that found no room, retried
    shmfetch_robots_denied_total            requests answered robots_denied
    shmfetch_cache_lookups_total{result}    hit, miss, revalidate
    shmfetch_build_info{version,python}     always 1
    shmfetch_http_rejected_total{reason}    HTTP API requests refused before any handler: missing_token,
                                            wrong_token (401), foreign_host, foreign_origin (403)
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import Any

from ..dispatch.figures import Histogram

# prometheus_client is imported at the first scrape, not here: it (~46 ms of imports) is needed only by
# /metrics.

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Why the HTTP API refused a request before any handler (fronts/http.py); always exported, 0 or not.
REJECT_REASONS = ("missing_token", "wrong_token", "foreign_host", "foreign_origin")


class StatsCollector:
    """The one collector: turns a ``stats()`` snapshot into metric families."""

    def __init__(
        self, stats: Callable[[], dict[str, Any]], version: str, http_rejected: dict[str, int] | None = None
    ):
        self.stats = stats
        self.version = version
        self.http_rejected = http_rejected or {}

    def collect(self) -> Iterator[Any]:
        st = self.stats()
        fr = st.get("frontier") or {}
        yield from self._requests(st, fr)
        yield from self._processes(st)
        yield from self._admission(st, fr)

    @staticmethod
    def _requests(st: dict[str, Any], fr: dict[str, Any]) -> Iterator[Any]:
        """Answers by outcome, fetch times, bytes, retries, the queue and the requests in flight."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        outcomes = CounterMetricFamily(
            "shmfetch_requests", "Answered requests by outcome", labels=["outcome"]
        )
        outcomes.add_metric(["ok"], st["ok_delivered"] + (fr.get("cache") or {}).get("answers", 0))
        for code, n in sorted(st["failures"].items()):
            outcomes.add_metric([code], n)
        yield outcomes
        h = fr.get("fetch_seconds") or Histogram().snapshot()
        yield HistogramMetricFamily(
            "shmfetch_fetch_duration_seconds",
            "Time from dispatch to a worker to its result",
            buckets=[(str(le), n) for le, n in h["buckets"]],
            sum_value=h["sum"],
        )
        yield CounterMetricFamily(
            "shmfetch_response_bytes", "Body bytes received from origins", value=fr.get("response_bytes", 0)
        )
        yield CounterMetricFamily("shmfetch_retries", "Retries of fetches", value=st.get("retries", 0))
        yield GaugeMetricFamily("shmfetch_queue_depth", "Requests waiting in the master", value=st["pending"])
        yield GaugeMetricFamily(
            "shmfetch_inflight_requests", "Requests handed to workers, not answered", value=st["dispatched"]
        )

    def _processes(self, st: dict[str, Any]) -> Iterator[Any]:
        """Workers alive, the SIGUSR1 count, respawns that found no room, the build."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        alive = sum(1 for w in st["workers"] if w["alive"])
        yield GaugeMetricFamily("shmfetch_workers_alive", "Live worker processes", value=alive)
        yield CounterMetricFamily("shmfetch_downloads", "The SIGUSR1 download count", value=st["downloaded"])
        yield CounterMetricFamily(
            "shmfetch_respawn_resource_failures",
            "Worker respawns that found no room (shared memory, memory, processes), retried",
            value=st.get("resource_failures", 0),
        )
        info = InfoMetricFamily("shmfetch_build", "shmfetch build information")
        info.add_metric([], {"version": self.version, "python": platform.python_version()})
        yield info

    def _admission(self, st: dict[str, Any], fr: dict[str, Any]) -> Iterator[Any]:
        """robots.txt refusals, cache lookups, the HTTP API's refusals."""
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily(
            "shmfetch_robots_denied",
            "Requests refused by robots.txt",
            value=st["failures"].get("robots_denied", 0),
        )
        lookups = CounterMetricFamily(
            "shmfetch_cache_lookups", "HTTP cache lookups by result", labels=["result"]
        )
        got = (fr.get("cache") or {}).get("lookups", {})
        for result in ("hit", "miss", "revalidate"):
            lookups.add_metric([result], got.get(result, 0))
        yield lookups
        rejected = CounterMetricFamily(
            "shmfetch_http_rejected", "HTTP API requests refused by a guard, by reason", labels=["reason"]
        )
        for reason in REJECT_REASONS:
            rejected.add_metric([reason], self.http_rejected.get(reason, 0))
        yield rejected


def render(
    stats: Callable[[], dict[str, Any]], version: str, http_rejected: dict[str, int] | None = None
) -> bytes:
    """The Prometheus text exposition of ``stats()`` and the HTTP API's refusals (a fresh registry per
    scrape: nothing global)."""
    from prometheus_client.core import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats, version, http_rejected))
    return generate_latest(registry)
