"""The h11 front end that was measured against aiohttp.web for the HTTP API (contrib/bench_http.py).

Not shipped: shmfetch/fronts/http.py uses aiohttp, which measured less master CPU per request
(docs/OPERATIONS.md, "HTTP API"). Kept so the comparison can be re-run: same interface as
shmfetch.fronts.http.HttpApi. Each connection is an asyncio Protocol driving an h11 state machine and is
itself the Sink of the job it submits, one request at a time per connection (reading paused meanwhile).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11

from shmfetch.dispatch.dispatcher import Dispatcher, Job
from shmfetch.fronts.http import http_status, parse_listen
from shmfetch.fronts.unix import MAX_URL_CHARS, flush_and_close
from shmfetch.protocol import ERRORS, RESULT_FIELDS

log = logging.getLogger("shmfetch.master")

MAX_HEADER_BYTES = 64 * 1024  # a percent-encoded 8192-character URL fits with room for headers
_SERVER = [("server", "shmfetch")]


class HttpConnection(asyncio.Protocol):
    """One HTTP client connection; also the Sink of its current job (``closed`` + ``send``)."""

    def __init__(self, api: HttpApi):
        self.api = api
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.request: h11.Request | None = None
        self.busy = False  # a job is out; its result comes back through send()
        self.want_json = False

    # -- asyncio.Protocol -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        api = self.api
        api.connections.add(self)
        if len(api.connections) > api.max_connections:
            # No request has been read yet, so h11 would refuse to answer: write the 503 by hand.
            self.closed = True
            body = b"too many connections\n"
            self.transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.api.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.h11.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        if not self.closed:
            self.h11.receive_data(b"")
            self._process()
        # A client that half-closes after its request still gets the answer of the job that is out.
        return True if self.busy and not self.closed else None

    # -- request side ---------------------------------------------------------------------------------

    def _process(self) -> None:
        """Run h11 until it needs more bytes, or a job is out (its answer resumes us)."""
        conn = self.h11
        while not self.closed and not self.busy:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError as e:
                self._protocol_error(e)
                return
            if ev is h11.NEED_DATA:
                return
            if ev is h11.PAUSED:
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                    continue
                self._close()
                return
            if isinstance(ev, h11.Request):
                self.request = ev
            elif isinstance(ev, h11.EndOfMessage):
                self._handle(self.request)
            elif isinstance(ev, h11.ConnectionClosed):
                self._close()
                return
            # h11.Data (a body on a GET) is read and dropped

    def _handle(self, req: h11.Request | None) -> None:
        self.busy = True
        if self.transport is not None:
            self.transport.pause_reading()  # one request at a time: the next waits in the kernel
        if req is None:
            self._respond(400, b"no request\n", "text/plain; charset=utf-8")
            return
        accept = b""
        for name, value in req.headers:
            if name == b"accept":
                accept = value
        self.want_json = b"application/json" in accept.lower()
        if req.method not in (b"GET",):
            self._respond(405, b"only GET\n", "text/plain; charset=utf-8", extra=[("allow", "GET")])
            return
        target = urlsplit(req.target.decode("latin-1"))
        if target.path == "/fetch":
            self._fetch(target.query)
        elif target.path == "/stats":
            body = json.dumps(self.api.stats()).encode()
            self._respond(200, body, "application/json")
        else:
            self._respond(404, b"not found: use /fetch?url=... or /stats\n", "text/plain; charset=utf-8")

    def _fetch(self, query: str) -> None:
        try:
            urls = parse_qs(query, keep_blank_values=True, errors="strict").get("url")
        except (UnicodeDecodeError, ValueError):
            urls = None
        if not urls or not urls[0]:
            self.send(_error(None, "bad_request", "missing query parameter 'url'"))
            return
        url = urls[0]
        if len(url) > MAX_URL_CHARS:
            self.send(_error(url, "invalid_url", f"URL longer than {MAX_URL_CHARS} characters"))
            return
        api = self.api
        api.dispatcher.submit(Job(self, next(api.ids), url))  # a refusal calls send() at once

    # -- response side (the Sink) ---------------------------------------------------------------------

    def send(self, frame: dict[str, Any]) -> None:
        """A job's result (a listener-style result frame) -> one HTTP response."""
        if self.closed:
            return
        error = frame.get("error")
        status = http_status(error)
        extra = []
        if error:
            extra.append(("x-shmfetch-error", error))
        if frame.get("status") is not None:
            extra.append(("x-shmfetch-upstream-status", str(frame["status"])))
        if self.want_json:
            body = json.dumps({k: frame.get(k) for k in RESULT_FIELDS}, ensure_ascii=False).encode()
            self._respond(status, body, "application/json", extra)
        elif error:
            line = f"{error}: {frame.get('message') or ERRORS.get(error, error)}\n"
            self._respond(status, line.encode("utf-8", "replace"), "text/plain; charset=utf-8", extra)
        else:
            text = frame.get("text") or ""
            self._respond(status, text.encode("utf-8", "replace"), "text/plain; charset=utf-8", extra)

    def _respond(
        self,
        status: int,
        body: bytes,
        ctype: str,
        extra: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        t = self.transport
        if self.closed or t is None:
            return
        headers = [*_SERVER, ("content-type", ctype), ("content-length", str(len(body))), *(extra or ())]
        if close:
            headers.append(("connection", "close"))
        conn = self.h11
        try:
            out = conn.send(h11.Response(status_code=status, headers=headers))
            out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self._close()
            return
        t.write(out)
        if t.get_write_buffer_size() > self.api.client_buffer_bytes:
            log.warning("cutting off an HTTP client that does not read its responses")
            self.closed = True
            t.abort()
            return
        self.busy = False
        if close or conn.our_state is h11.MUST_CLOSE:
            self._close()
            return
        t.resume_reading()
        # Requests the client already sent sit in h11's buffer; run them now, but not recursively
        # inside a Dispatcher callback that is still iterating its batch.
        asyncio.get_running_loop().call_soon(self._process)

    def _protocol_error(self, e: h11.RemoteProtocolError) -> None:
        status = e.error_status_hint or 400
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.busy = True
            self._respond(status, f"bad request: {e}\n".encode(), "text/plain; charset=utf-8", close=True)
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _error(url: str | None, code: str, message: str) -> dict[str, Any]:
    return {"url": url, "ok": False, "error": code, "message": message, "text": ""}


class HttpApi:
    """The HTTP server and its live connections; started and stopped by the master."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        stats: Callable[[], dict[str, Any]],
        max_connections: int,
        client_buffer_bytes: int,
    ):
        self.dispatcher = dispatcher
        self.stats = stats
        self.max_connections = max_connections
        self.client_buffer_bytes = client_buffer_bytes
        self.connections: set[HttpConnection] = set()
        self.ids = itertools.count(1)
        self.server: asyncio.AbstractServer | None = None

    async def start(self, listen: str) -> None:
        host, port = parse_listen(listen)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: HttpConnection(self), host, port, backlog=1024)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close_all(self, timeout: float = 2.0) -> None:
        await flush_and_close(self.connections, timeout)
        await asyncio.sleep(0)
