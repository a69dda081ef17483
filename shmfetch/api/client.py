"""Python clients for a running daemon: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both speak the framed msgpack protocol of shmfetch/protocol.py over the daemon's Unix socket, pipelining
requests on one connection. ``fetch_many`` keeps at most ``concurrency`` requests outstanding and yields
results in completion order, so memory stays bounded however many URLs are fed in.

    with Client(DaemonConfig().socket) as c:  # shmfetch.config: the default socket path
        page = c.fetch("http://127.0.0.1:8000/")
        for r in c.fetch_many(urls, concurrency=64):
            print(r.url, r.ok, len(r.text))
        article = c.fetch(url, mode="markdown", links=True)

Per-request options are keyword arguments of ``fetch`` and ``fetch_many`` (the same for every URL of a
``fetch_many``): ``mode`` ("text", "main", "markdown"), ``metadata``, ``links``, ``timeout``,
``accept_language``, ``max_bytes`` (shmfetch/options.py). None means the daemon's config default. An
unknown option or a bad value comes back as a result with ``error == "bad_request"`` naming it.

A crawl (docs/CRAWL.md) streams one result per page, then its summary:

    with Client(path) as c:
        for r in c.crawl(["http://127.0.0.1:8000/"], depth=2, scope="host", max_pages=100):
            print(r)  # a Result (with crawl_depth and referrer) per page, then one CrawlSummary

Closing the connection stops the crawls it started (the daemon drops what they had in flight).

A request every daemon refuses is answered here, without being sent: a URL longer than 8192 characters
(``options.url_problem``) with ``invalid_url``, an unknown option or a value of the wrong type with
``bad_request`` (only the caps of the daemon's config are left to the daemon). A long enough URL or
Accept-Language would exceed ``max_frame_bytes``, and the daemon would close the connection under the
whole batch.
Both refuse a socket whose listener is another user than us or root, unless that user owns the socket's
directory and nobody else may write there (``check_peer``, SO_PEERCRED).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import socket
import struct
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from ..config import FetchConfig
from ..options import OptionError, check, url_problem
from ..protocol import (
    FRAME_HDR,
    CrawlSummary,
    FrameDecoder,
    FrameError,
    Result,
    decode_frame_body,
    encode_frame,
    error_frame,
)

MAX_RESPONSE_BYTES = 1 << 31  # a response holds up to [fetch] max_text_bytes of text
SENTINEL_ID, WAKE_ID = -1, -3  # fetch_many's own stats requests: "the sender is done", "read local results"


class DaemonUnavailable(ConnectionError):
    """No daemon answers on the socket."""


class UntrustedDaemon(DaemonUnavailable):
    """The process listening on the socket is neither this user nor root: it could be anyone's impostor."""


_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def check_peer(sock: socket.socket, socket_path: str) -> None:
    """Refuse a daemon run by another user (SO_PEERCRED: the listener's credentials, from the kernel). A
    socket at a shared path may have been bound first by anyone, who would then see every URL we send.

    Trusted: ourselves, root, and the owner of the socket's directory when nobody else may write there
    (a service user's 0750 RuntimeDirectory shared with a group of clients): no one but that owner (or
    root) can have put a socket in it."""
    pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    if uid in (os.geteuid(), 0) or _owns_private_dir(uid, os.path.dirname(os.path.abspath(socket_path))):
        return
    raise UntrustedDaemon(
        f"{socket_path} is served by uid {uid} (pid {pid}), not by you (uid {os.geteuid()}) or root: "
        "refusing to talk to it"
    )


def _owns_private_dir(uid: int, directory: str) -> bool:
    try:
        st = os.stat(directory)
    except OSError:
        return False
    return st.st_uid == uid and not st.st_mode & 0o022


class ProtocolError(RuntimeError):
    """The daemon answered with an error frame that is not tied to a request."""


def _request(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """A fetch frame (without its id): the options that are not None travel in its ``options`` map."""
    given = _given(options)
    return {"url": url, "options": given} if given else {"url": url}


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


# The daemon's option rule without the caps of its config, which only the daemon knows: names, types and
# the accept_language limit. No option then makes a frame larger than any URL's.
_UNCAPPED = FetchConfig(timeout=math.inf, max_bytes=1 << 62)


def _refused(url: str, options: dict[str, Any]) -> Result | None:
    """The result of a request every daemon refuses (``invalid_url``: a URL over the limit;
    ``bad_request``: an unknown or malformed option), answered without sending it; else None."""
    code, problem = "invalid_url", url_problem(url)
    if problem is None:
        try:
            check(_given(options) or None, _UNCAPPED)
            return None
        except OptionError as e:
            code, problem = "bad_request", str(e)
    return Result.from_frame(error_frame(None, code, problem, url=url))


class CrawlRefused(ValueError):
    """The daemon (or this client, for what every daemon refuses) did not take a crawl: a bad seed, rule
    or option. ``code`` is the error code (``invalid_url``, ``bad_request``); the message says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _crawl_request(seeds: Iterable[str], rules: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A crawl frame (without its id); an option every daemon refuses raises CrawlRefused here."""
    given = _given(options)
    try:
        check(given or None, _UNCAPPED)
    except OptionError as e:
        raise CrawlRefused("bad_request", str(e)) from None
    frame: dict[str, Any] = {"op": "crawl", "seeds": [seeds] if isinstance(seeds, str) else list(seeds)}
    if r := _given(rules):
        frame["crawl"] = r
    if given:
        frame["options"] = given
    return frame


def _crawl_answer(frame: dict[str, Any]) -> Result | CrawlSummary:
    """One answer of a crawl: a page's Result, the closing CrawlSummary, or the refusal (raised)."""
    if "summary" in frame:
        return CrawlSummary.from_frame(frame)
    if "url" not in frame:  # an error frame for the crawl request itself
        raise CrawlRefused(frame.get("error") or "bad_request", frame.get("message") or "refused")
    return Result.from_frame(frame)


def _result(frame: dict[str, Any]) -> Result:
    if frame.get("id") is None and not frame.get("ok"):
        raise ProtocolError(f"{frame.get('error')}: {frame.get('message')}")
    return Result.from_frame(frame)


class Client:
    """A blocking client. Not thread-safe: use one per thread (``fetch_many`` manages its own sender)."""

    def __init__(self, socket_path: str, timeout: float | None = None):
        self.socket_path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(socket_path)
        except OSError as e:
            self._sock.close()
            raise DaemonUnavailable(
                f"no shmfetch daemon answers on {socket_path}: {e.strerror or e}"
            ) from None
        try:
            check_peer(self._sock, socket_path)
        except BaseException:
            self._sock.close()
            raise
        self._decoder = FrameDecoder(MAX_RESPONSE_BYTES)
        self._ready: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _recv_frame(self) -> dict[str, Any]:
        while not self._ready:
            data = self._sock.recv(1 << 20)
            if not data:
                raise DaemonUnavailable("the daemon closed the connection")
            self._ready.extend(self._decoder.feed(data))
        return self._ready.pop(0)

    def _call(self, frame: dict[str, Any]) -> dict[str, Any]:
        frame["id"] = next(self._ids)
        self._sock.sendall(encode_frame(frame))
        while True:
            reply = self._recv_frame()
            if reply.get("id") in (frame["id"], None):
                return reply

    def fetch(self, url: str, **options: Any) -> Result:
        """Fetch one URL with the given options (see the module docstring) and wait for its result."""
        return _refused(url, options) or _result(self._call(_request(url, options)))

    def stats(self) -> dict[str, Any]:
        """The daemon's live figures (see ``shmfetch stats``)."""
        reply = self._call({"op": "stats"})
        if not reply.get("ok"):
            raise ProtocolError(f"{reply.get('error')}: {reply.get('message')}")
        return reply["stats"]

    def send_await_exit(self) -> None:
        """Ask for the daemon's final count, answered when it stops (``shmfetch stop``: send this, signal
        the daemon, then ``recv_final``)."""
        self._sock.sendall(encode_frame({"id": -2, "op": "await_exit"}))

    def recv_final(self) -> int:
        while True:
            frame = self._recv_frame()
            if frame.get("id") == -2:
                return frame["downloaded"]

    def crawl(
        self,
        seeds: Iterable[str],
        depth: int | None = None,
        max_pages: int | None = None,
        scope: str | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        robots: bool | None = None,
        sitemaps: bool | None = None,
        **options: Any,
    ) -> Iterator[Result | CrawlSummary]:
        """Crawl from ``seeds`` (rules: docs/CRAWL.md; None: the daemon's [crawl] default); yield each
        page's Result as it arrives, then the CrawlSummary, last. A refused crawl raises CrawlRefused."""
        rules = {"depth": depth, "max_pages": max_pages, "scope": scope, "include": include,
                 "exclude": exclude, "robots": robots, "sitemaps": sitemaps}  # fmt: skip
        frame = _crawl_request(seeds, rules, options)
        frame["id"] = req_id = next(self._ids)
        self._sock.sendall(encode_frame(frame))
        while True:
            reply = self._recv_frame()
            if reply.get("id") is None and not reply.get("ok"):
                raise ProtocolError(f"{reply.get('error')}: {reply.get('message')}")
            if reply.get("id") != req_id:
                continue
            got = _crawl_answer(reply)
            yield got
            if isinstance(got, CrawlSummary):
                return

    def fetch_many(self, urls: Iterable[str], concurrency: int = 64, **options: Any) -> Iterator[Result]:
        """Fetch many URLs over this connection, at most ``concurrency`` in flight; yield in completion order.

        ``urls`` is consumed lazily by a sender thread, so a slow source (stdin) and the results stream at
        the same time.
        """
        window = threading.BoundedSemaphore(concurrency)
        state = {"sent": 0, "done": False, "error": None}
        local: deque[Result] = deque()  # URLs answered without sending (``_refused``)
        wake = threading.Event()  # a WAKE_ID request is outstanding
        ids = self._ids

        def sender() -> None:
            try:
                for url in urls:
                    if (refused := _refused(url, options)) is not None:
                        local.append(refused)
                        if not wake.is_set():  # the reader may be waiting on the socket: wake it
                            wake.set()
                            self._sock.sendall(encode_frame({"id": WAKE_ID, "op": "stats"}))
                        continue
                    window.acquire()
                    frame = _request(url, options)
                    frame["id"] = next(ids)
                    self._sock.sendall(encode_frame(frame))
                    state["sent"] += 1
            except BaseException as e:  # surfaced to the reader below
                state["error"] = e
            finally:
                state["done"] = True
                # Wake the reader if it waits for results that will not come.
                try:
                    self._sock.sendall(encode_frame({"id": SENTINEL_ID, "op": "stats"}))
                except OSError:
                    pass

        t = threading.Thread(target=sender, name="shmfetch-sender", daemon=True)
        t.start()
        try:
            yield from self._gather(window, state, local, wake)
        finally:
            t.join(timeout=1.0)
        if state["error"] is not None:
            raise state["error"]

    def _gather(
        self,
        window: threading.BoundedSemaphore,
        state: dict[str, Any],
        local: deque[Result],
        wake: threading.Event,
    ) -> Iterator[Result]:
        """``fetch_many``'s reader: the daemon's results and the local ones, until the sender's sentinel
        (its reply says the sender is done even while we wait on the socket) and every result are in."""
        received = 0
        sentinel_seen = False
        while True:
            while local:
                yield local.popleft()
            if sentinel_seen and received >= state["sent"]:
                return
            frame = self._recv_frame()
            if frame.get("id") == SENTINEL_ID:
                sentinel_seen = True
                continue
            if frame.get("id") == WAKE_ID:
                wake.clear()  # then drain ``local``: what the sender added before it saw the flag clear
                continue
            received += 1
            window.release()
            yield _result(frame)


class AsyncClient:
    """The asyncio twin of ``Client``: ``await AsyncClient.connect(path)``, then the same methods."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiters: dict[int, asyncio.Future] = {}
        self._streams: dict[int, asyncio.Queue] = {}  # crawl id -> its answers, as they arrive
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(cls, socket_path: str) -> AsyncClient:
        try:
            reader, writer = await asyncio.open_unix_connection(socket_path, limit=1 << 20)
        except OSError as e:
            raise DaemonUnavailable(
                f"no shmfetch daemon answers on {socket_path}: {e.strerror or e}"
            ) from None
        try:
            check_peer(writer.get_extra_info("socket"), socket_path)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._reader_task.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass

    async def _read_loop(self) -> None:
        try:
            while True:
                (n,) = FRAME_HDR.unpack(await self._reader.readexactly(4))
                if n > MAX_RESPONSE_BYTES:
                    raise FrameError(
                        "frame_too_large", f"frame of {n} bytes exceeds max_frame_bytes={MAX_RESPONSE_BYTES}"
                    )
                # Decoded straight from the body: a FrameDecoder per frame copied every frame twice more.
                frame = decode_frame_body(await self._reader.readexactly(n))
                stream = self._streams.get(frame.get("id"))
                if stream is not None:  # a crawl's answers
                    stream.put_nowait(frame)
                    continue
                fut = self._waiters.pop(frame.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
                elif frame.get("id") is None:
                    self._fail_all(ProtocolError(f"{frame.get('error')}: {frame.get('message')}"))
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self._fail_all(DaemonUnavailable(f"the daemon closed the connection: {e}"))

    def _fail_all(self, error: Exception) -> None:
        """Every call and crawl waiting for an answer gets ``error``."""
        for f in self._waiters.values():
            if not f.done():
                f.set_exception(error)
        for q in self._streams.values():
            q.put_nowait(error)

    async def _call(self, frame: dict[str, Any]) -> dict[str, Any]:
        frame["id"] = req_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiters[req_id] = fut
        self._writer.write(encode_frame(frame))
        await self._writer.drain()
        return await fut

    async def fetch(self, url: str, **options: Any) -> Result:
        """Fetch one URL with the given options (see the module docstring)."""
        return _refused(url, options) or _result(await self._call(_request(url, options)))

    async def stats(self) -> dict[str, Any]:
        return (await self._call({"op": "stats"}))["stats"]

    async def crawl(
        self,
        seeds: Iterable[str],
        depth: int | None = None,
        max_pages: int | None = None,
        scope: str | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        robots: bool | None = None,
        sitemaps: bool | None = None,
        **options: Any,
    ) -> AsyncIterator[Result | CrawlSummary]:
        """Like ``Client.crawl``: each page's Result as it arrives, then the CrawlSummary."""
        rules = {"depth": depth, "max_pages": max_pages, "scope": scope, "include": include,
                 "exclude": exclude, "robots": robots, "sitemaps": sitemaps}  # fmt: skip
        frame = _crawl_request(seeds, rules, options)
        frame["id"] = req_id = next(self._ids)
        answers: asyncio.Queue = asyncio.Queue()
        self._streams[req_id] = answers
        try:
            self._writer.write(encode_frame(frame))
            await self._writer.drain()
            while True:
                item = await answers.get()
                if isinstance(item, BaseException):
                    raise item
                got = _crawl_answer(item)
                yield got
                if isinstance(got, CrawlSummary):
                    return
        finally:
            self._streams.pop(req_id, None)

    async def fetch_many(
        self, urls: Iterable[str], concurrency: int = 64, **options: Any
    ) -> AsyncIterator[Result]:
        """Like ``Client.fetch_many``: bounded in-flight window, results in completion order."""
        it = iter(urls)
        running: set[asyncio.Task] = set()
        loop = asyncio.get_running_loop()
        for url in itertools.islice(it, concurrency):
            running.add(loop.create_task(self.fetch(url, **options)))
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                yield task.result()
                nxt = next(it, None)
                if nxt is not None:
                    running.add(loop.create_task(self.fetch(nxt, **options)))
