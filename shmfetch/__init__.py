"""shmfetch: a daemon that turns URLs into plain text at high throughput over POSIX shared memory."""

from .client import AsyncClient, Client, DaemonUnavailable
from .protocol import ERRORS, Result

__all__ = ["AsyncClient", "Client", "DaemonUnavailable", "ERRORS", "RedisClient", "Result"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # RedisClient is imported on first use: daemons and workers without [cluster] never load redis-py.
    if name == "RedisClient":
        from .cluster.client import RedisClient

        return RedisClient
    raise AttributeError(f"module 'shmfetch' has no attribute {name!r}")
