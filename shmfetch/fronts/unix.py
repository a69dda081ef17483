"""Client connections on the Unix socket: frames in, requests to the intake (shmfetch/intake.py), results out.

Each connection is an asyncio Protocol (no per-connection task or stream objects: a connection costs a
few hundred bytes plus its buffers). A client that breaks the framing gets an error frame and is closed;
a request with a wrong shape gets an error frame and the connection goes on. A client that stops reading
is cut off once its unsent responses exceed ``client_buffer_bytes``, so it cannot make the master grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any

from ..intake import Intake
from ..job import answer
from ..protocol import FrameDecoder, FrameError, error_frame

log = logging.getLogger("shmfetch.master")


class ClientConnection(asyncio.Protocol):
    def __init__(self, server: Listener):
        self.server = server
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(server.max_frame_bytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        srv = self.server
        srv.connections.add(self)
        if len(srv.connections) > srv.max_connections:
            self._fatal("overloaded", f"too many connections (max_connections={srv.max_connections})")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            self._fatal(e.code, str(e))
            return
        for frame in frames:
            self._handle(frame)

    def _handle(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            answer(self, error_frame(None, "bad_request", "a request frame must be a msgpack map"))
            return
        req_id = frame.get("id")
        if not isinstance(req_id, int | str) or isinstance(req_id, bool):
            answer(self, error_frame(None, "bad_request", "missing or invalid 'id' (int or str)"))
            return
        op = frame.get("op", "fetch")
        if op == "stats":
            self.send({"id": req_id, "ok": True, "stats": self.server.stats()})
            return
        if op == "await_exit":  # answered with the final count when the daemon stops (`shmfetch stop`)
            self.server.exit_waiters.append((self, req_id))
            return
        if op == "crawl":  # seeds and rules: the intake checks them, the crawl answers pages then a summary
            seeds, rules = frame.get("seeds"), frame.get("crawl")
            self.server.intake.crawl(self, req_id, seeds, rules, frame.get("options"))
            return
        if op != "fetch":
            answer(self, error_frame(req_id, "bad_request", f"unknown op {op!r}"))
            return
        url = frame.get("url")
        if not isinstance(url, str):
            answer(self, error_frame(req_id, "bad_request", "missing or invalid 'url' (str)"))
            return
        self.server.intake.request(self, req_id, url, frame.get("options"))

    def send(self, frame: dict[str, Any]) -> None:
        """Send ``frame`` (the ``stats`` answer, the final count of ``await_exit``): through ``job.answer``,
        like every answer, which packs it for ``send_encoded``."""
        answer(self, frame)

    def send_encoded(self, data: bytes) -> None:
        """Send one frame already encoded, length prefix included (job.answer packs every answer)."""
        if self.closed or self.transport is None:
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.server.client_buffer_bytes:
            log.warning("cutting off a client that does not read its responses")
            self.closed = True
            self.transport.abort()

    def _fatal(self, code: str, message: str) -> None:
        log.info("closing client connection: %s", message)
        answer(self, error_frame(None, code, message))
        self.closed = True
        if self.transport is not None:
            self.transport.close()


LISTEN_BACKLOG = 1024  # a burst of clients connecting at once waits in the kernel, not refused with EAGAIN


class Listener:
    """The Unix socket server and the set of its live connections."""

    def __init__(
        self,
        intake: Intake,
        stats: Callable[[], dict[str, Any]],
        max_frame_bytes: int,
        max_connections: int,
        client_buffer_bytes: int,
    ):
        self.intake = intake
        self.stats = stats
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.client_buffer_bytes = client_buffer_bytes
        self.connections: set[ClientConnection] = set()
        self.exit_waiters: list[tuple[ClientConnection, Any]] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock``, a listening socket from ``bind_exclusive``."""
        loop = asyncio.get_running_loop()
        # asyncio calls listen() again with its own backlog (100 by default): keep bind_exclusive's.
        self.server = await loop.create_unix_server(
            lambda: ClientConnection(self), sock=sock, backlog=LISTEN_BACKLOG
        )

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close_all(self, timeout: float = 2.0) -> None:
        await flush_and_close(self.connections, timeout)


class SocketInUse(RuntimeError):
    """A live process listens on the socket path. ``pid`` is its pid (None if the kernel would not say)."""

    def __init__(self, path: str, pid: int | None):
        who = f"pid {pid}" if pid else "a live process"
        super().__init__(f"socket {path} is in use by {who}")
        self.path = path
        self.pid = pid


def bind_exclusive(path: str, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600, that never takes the place of a live one.

    asyncio's ``create_unix_server(path=...)`` unlinks whatever is at ``path`` first, live or not. Here the
    socket is bound and listening under a private name in the same directory, then hard-linked into place:
    ``link`` never replaces, so of two daemons racing for one path exactly one wins (the other gets
    EEXIST). A socket left by a dead daemon (nobody accepts on it) is replaced, under an flock on the
    directory so that two starters cannot both judge it stale and one unlink the other's fresh socket.

    Raises SocketInUse (naming the listener's pid) or OSError (missing directory, permissions).
    """
    directory = os.path.dirname(os.path.abspath(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.new")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # ours by name: a process with our pid that died before unlinking it
        old_umask = os.umask(0o177)
        try:
            sock.bind(tmp)
        finally:
            os.umask(old_umask)
        try:
            sock.listen(backlog)
            _link_into_place(tmp, path)
        finally:
            os.unlink(tmp)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _link_into_place(tmp: str, path: str) -> None:
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        pass
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)  # held for two syscalls: short, and released on death
        pid = listener_pid(path)
        if pid is not None:
            raise SocketInUse(path, pid or None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        log.info("removed stale socket %s (nobody listened on it)", path)
        os.link(tmp, path)  # FileExistsError here: someone outside this protocol got there first
    finally:
        os.close(dir_fd)


def listener_pid(path: str) -> int | None:
    """The pid of the process listening on Unix socket ``path`` (0 if unknown), or None if nobody listens."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except TimeoutError:
            return 0  # a listener too busy to accept within 2 s is still a listener
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in (errno.ECONNREFUSED, errno.ENOTSOCK):
                return None
            raise
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[0]
    finally:
        probe.close()


async def flush_and_close(connections: Iterable[Any], timeout: float) -> None:
    """Let each connection (``.transport``, ``.closed``) flush what it was sent, within ``timeout`` for all,
    then close it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for conn in list(connections):
        t = conn.transport
        while t is not None and not t.is_closing() and t.get_write_buffer_size() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        conn.closed = True
        if t is not None:
            t.close()
        await asyncio.sleep(0)
