"""shmfetch: a daemon that turns URLs into plain text at high throughput over POSIX shared memory."""

from .protocol import ERRORS, Result

__all__ = ["AsyncClient", "Client", "DaemonUnavailable", "ERRORS", "RedisClient", "Result"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The clients are imported on first use: a worker process imports this package before anything else,
    # and must not pay for asyncio (the socket clients) or redis-py (RedisClient) while it boots.
    if name in ("AsyncClient", "Client", "DaemonUnavailable"):
        from .api import client

        return getattr(client, name)
    if name == "RedisClient":
        from .cluster.client import RedisClient

        return RedisClient
    raise AttributeError(f"module 'shmfetch' has no attribute {name!r}")
