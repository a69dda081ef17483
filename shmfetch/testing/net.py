"""Loopback ports for tests and tools."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing listened on a moment ago: bound to port 0, then released.

    Good for a server started next (a daemon's HTTP front, a redis-server) and for connection-refused
    checks. Another process may take it in between; loopback ports are plentiful, so that is rare."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
