"""A fetch's failures: ``FetchError`` carries a protocol error code, and ``remaining`` enforces the deadline.

Messages are for people: what failed, where, and after how long (docs/FETCH.md, "Error messages").
"""

from __future__ import annotations

import time


class FetchError(Exception):
    """A failure with its stable error code; turned into an Outcome at the top of Fetcher.fetch."""

    def __init__(self, code: str, message: str, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.url = url


def remaining(deadline: float) -> float:
    """Seconds left before ``deadline`` (time.monotonic); ``timeout`` if none are left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError("timeout", "the fetch did not finish within the timeout")
    return left
