"""The fetch figures the dispatcher keeps from the results it delivers, for ``stats`` and ``/metrics``.

Fed per result on the master's loop thread (a bisect and a few adds), read at scrape time by
fronts/metrics.py, which turns the histogram into ``shmfetch_fetch_duration_seconds``.
"""

from __future__ import annotations

import bisect
from typing import Any

# prometheus_client's default buckets, in seconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class Histogram:
    """Bucket counts and a sum, fed by the master per result (a bisect and two adds)."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def snapshot(self) -> dict[str, Any]:
        """``{"buckets": [[le, cumulative count], ...], "count": n, "sum": s}`` (JSON-friendly)."""
        cum, out = 0, []
        for le, n in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            cum += n
            out.append(["+Inf" if le == float("inf") else le, cum])
        return {"buckets": out, "count": cum, "sum": round(self.sum, 6)}


class FetchFigures:
    """What the workers' results say about the fetches: their time from dispatch to result, the body bytes
    received from origins, and the retries the workers made."""

    __slots__ = ("fetch_seconds", "response_bytes", "retries")

    def __init__(self) -> None:
        self.fetch_seconds = Histogram()
        self.response_bytes = 0
        self.retries = 0

    def observe(self, seconds: float | None, frame: dict[str, Any]) -> None:
        """One worker result (``seconds`` from dispatch to result; None if it was never dispatched)."""
        if seconds is not None:
            self.fetch_seconds.observe(seconds)
        self.response_bytes += frame["body_bytes"] or 0
        self.retries += frame["retries"] or 0

    def snapshot(self) -> dict[str, Any]:
        return {"response_bytes": self.response_bytes, "fetch_seconds": self.fetch_seconds.snapshot()}
