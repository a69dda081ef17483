"""shmfetch: a daemon that turns URLs into plain text at high throughput over POSIX shared memory."""

from ._version import __version__
from .protocol import ERRORS, CrawlSummary, Result

__all__ = [
    "AsyncClient", "Client", "CrawlRefused", "CrawlSummary", "DaemonUnavailable", "ERRORS", "RedisClient",
    "Result", "__version__",
]  # fmt: skip

# The clients are imported on first use: a worker process imports this package before anything else,
# and must not pay for asyncio (the socket clients) or redis-py (RedisClient) while it boots.
_LAZY = {
    "AsyncClient": ".api.client",
    "Client": ".api.client",
    "CrawlRefused": ".api.client",
    "DaemonUnavailable": ".api.client",
    "RedisClient": ".cluster.client",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'shmfetch' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names are not in the module's namespace until first used: list them anyway.
    return sorted(set(globals()) | set(__all__))
