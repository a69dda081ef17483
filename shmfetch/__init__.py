"""shmfetch: a daemon that turns URLs into plain text at high throughput over POSIX shared memory."""

from .client import AsyncClient, Client, DaemonUnavailable
from .protocol import ERRORS, Result

__all__ = ["AsyncClient", "Client", "DaemonUnavailable", "ERRORS", "Result"]
__version__ = "0.1.0"
