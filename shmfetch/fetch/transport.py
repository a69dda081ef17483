"""The connections a Fetcher opens: pinned to the addresses it vetted, and cut at the fetch's deadline.

* Pinning (SSRF): the Fetcher resolves and vets a host itself (netpolicy) and records the addresses in its
  ``Ctx``; the connection classes mounted by ``PinnedAdapter`` connect only to those (DNS rebinding cannot
  swap them), while Host, SNI and certificate checks keep the name.
* The watchdog: one thread per process shuts a fetch's socket down at its deadline, so that nothing (a
  slow header drip, a stuck TLS handshake) can hold a fetch longer than its timeout.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as u3conn

from .errors import host_port

WATCHDOG_GRACE = 0.05  # our own clock checks should win; the watchdog is the backstop


# -- deadline watchdog ----------------------------------------------------------------------------------


class Ctx:
    """Per-Fetcher state the connection classes and the watchdog see."""

    def __init__(self) -> None:
        self.pins: dict[tuple[str, int], list[str]] = {}
        self.sock: socket.socket | None = None
        self.generation = 0  # bumped after each fetch, so a late watchdog entry is ignored
        self.lock = threading.Lock()

    def fire(self, generation: int) -> None:
        with self.lock:
            if generation != self.generation or self.sock is None:
                return
            try:
                # The plain socket method: SSLSocket.shutdown would tear down the SSL object under the
                # reading thread's feet; shutting the fd makes its blocked recv return at once.
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def done(self) -> None:
        """The fetch is over: its watchdog entry is void, its socket and pins are forgotten."""
        with self.lock:
            self.generation += 1
            self.sock = None
            self.pins.clear()


class _Watchdog:
    """One thread for all Fetchers in the process: a heap of (deadline, ctx, generation)."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.heap: list[tuple[float, int, Ctx, int]] = []
        self.seq = itertools.count()
        self.thread: threading.Thread | None = None

    def arm(self, when: float, ctx: Ctx, generation: int) -> None:
        with self.cv:
            heapq.heappush(self.heap, (when, next(self.seq), ctx, generation))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="shmfetch-watchdog", daemon=True)
                self.thread.start()
            self.cv.notify()

    def _run(self) -> None:
        while True:
            with self.cv:
                # Entries of finished fetches are dropped unslept: after a burst the heap holds one per
                # fetch, and sleeping until each one's deadline kept an idle worker waking for 10 s.
                while self.heap and self.heap[0][3] != self.heap[0][2].generation:
                    heapq.heappop(self.heap)
                if not self.heap:
                    self.cv.wait()
                    continue
                when, _, ctx, gen = self.heap[0]
                now = time.monotonic()
                if when > now:
                    self.cv.wait(when - now)
                    continue
                heapq.heappop(self.heap)
            ctx.fire(gen)


_watchdog = _Watchdog()


def arm_watchdog(ctx: Ctx, deadline: float) -> None:
    """Cut ``ctx``'s socket at ``deadline`` (plus a grace) unless the fetch in progress is over by then."""
    _watchdog.arm(deadline + WATCHDOG_GRACE, ctx, ctx.generation)


# -- pinned connections -----------------------------------------------------------------------------


def pin_host(host: str) -> str:
    """The key a host is pinned under: as urllib3 will see it (lower case, no brackets, no final dot)."""
    return host.lower().strip("[]").rstrip(".")


def _connect_failure(e: OSError, addr: str, port: int) -> str:
    """``connection refused: 127.0.0.1:1``: what failed and where, without urllib3's wrappers."""
    reason = "connection refused" if e.errno == errno.ECONNREFUSED else (e.strerror or str(e)).lower()
    return f"{reason}: {host_port(addr, port)}"


class _PinMixin:
    """Connect only to the addresses Fetcher vetted for this host; keep the name for Host, SNI and certs."""

    _ctx: Ctx

    def _new_conn(self) -> socket.socket:
        host, port = self.host, self.port  # type: ignore[attr-defined]
        addrs = self._ctx.pins.get((pin_host(host), port))
        if not addrs:
            # Fail closed: a connection we did not vet (should not happen) is never opened.
            raise NewConnectionError(self, f"no vetted address for {host_port(host, port)}")  # type: ignore[arg-type]
        last: Exception | None = None
        for addr in addrs:
            try:
                sock = u3conn.create_connection(
                    (addr, port),
                    self.timeout,  # type: ignore[attr-defined]
                    source_address=self.source_address,  # type: ignore[attr-defined]
                    socket_options=self.socket_options,  # type: ignore[attr-defined]
                )
            except TimeoutError as e:
                raise ConnectTimeoutError(self, f"connect to {host_port(addr, port)} timed out") from e
            except OSError as e:
                last = NewConnectionError(self, _connect_failure(e, addr, port))  # type: ignore[arg-type]
                continue
            with self._ctx.lock:
                self._ctx.sock = sock
            return sock
        assert last is not None
        raise last

    def request(self, *args: Any, **kw: Any) -> None:
        sock = self.sock  # type: ignore[attr-defined]
        if sock is not None:  # a reused keep-alive connection: the watchdog must watch it too
            with self._ctx.lock:
                self._ctx.sock = sock
        super().request(*args, **kw)  # type: ignore[misc]


class PinnedAdapter(HTTPAdapter):
    """requests' adapter with connection classes that connect only to the addresses pinned in ``ctx``."""

    def __init__(self, ctx: Ctx, **kw: Any):
        self._ctx = ctx  # before super().__init__, which calls init_poolmanager
        super().__init__(max_retries=0, **kw)

    def init_poolmanager(self, *args: Any, **kw: Any) -> None:
        super().init_poolmanager(*args, **kw)
        ctx = self._ctx
        http_conn = type("_PinnedHTTPConnection", (_PinMixin, HTTPConnection), {"_ctx": ctx})
        https_conn = type("_PinnedHTTPSConnection", (_PinMixin, HTTPSConnection), {"_ctx": ctx})
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("_PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("_PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }
