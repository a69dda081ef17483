"""The optional HTTP API: ``GET /fetch?url=...``, ``GET /stats`` and ``GET /metrics`` (Prometheus, see
metrics.py), inside the master's event loop.

``/fetch`` takes the per-request options (shmfetch/options.py) as further query parameters:
``/fetch?url=...&mode=markdown&links=true&timeout=2``. ``Accept: text/markdown`` asks for Markdown when
no ``mode`` is given, and a Markdown answer is served as ``text/markdown``; ``Accept: application/json``
gives the result's JSON Lines fields instead of the text. An unknown parameter or a bad value is a 400
``bad_request`` naming it.

Off unless ``[http] listen = HOST:PORT``. Served by ``aiohttp.web`` on the master's loop: a request
becomes a Job submitted straight to the Dispatcher, whose Sink is a future the request handler awaits,
so an HTTP request costs the same queueing, credit and counting as one from the Unix socket. aiohttp was
measured against h11 on an asyncio Protocol (docs/OPERATIONS.md, "HTTP API", and
contrib/bench_http.py): its C parser adds less master CPU per request.

We own the listening socket (``loop.create_server`` with aiohttp's protocol factory) rather than use
aiohttp's sites, so that the master can stop accepting synchronously, like the Unix listener.

Anyone who can reach the port can make the daemon fetch whatever the SSRF policy allows: bind it to
loopback unless you mean to run an open proxy.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import __version__
from ..config import FetchConfig
from ..dispatch.dispatcher import Dispatcher, Job
from ..options import OptionError, check, url_problem
from ..protocol import ERRORS, RESULT_FIELDS
from . import metrics

log = logging.getLogger("shmfetch.master")

# Error code -> HTTP status. Anything not listed is an upstream failure: 502 Bad Gateway.
HTTP_STATUS: dict[str, int] = {
    "invalid_url": 400,
    "unsupported_scheme": 400,
    "bad_request": 400,
    "frame_too_large": 400,
    "blocked_address": 403,
    "too_large": 413,
    "unsupported_content_type": 415,
    "overloaded": 503,
    "shutting_down": 503,
    "timeout": 504,
}
UPSTREAM_FAILURE = 502
MAX_LINE_BYTES = 64 * 1024  # a percent-encoded 8192-character URL fits in the request line


def http_status(error: str | None) -> int:
    """The HTTP status for a result's error code (None = success)."""
    return 200 if error is None else HTTP_STATUS.get(error, UPSTREAM_FAILURE)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8088`` for IPv6) -> (host, port). config.py has already validated it."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class _Waiter:
    """The Sink of one HTTP request's job: the result frame resolves the future its handler awaits."""

    __slots__ = ("closed", "fut")

    def __init__(self, fut: asyncio.Future) -> None:
        self.closed = False
        self.fut = fut

    def send(self, frame: dict[str, Any]) -> None:
        if not self.fut.done():
            self.fut.set_result(frame)


def frame_response(frame: dict[str, Any], want_json: bool, markdown: bool = False) -> web.Response:
    """A result frame -> the HTTP response: the text (or ``error: message``), or the JSON Lines fields."""
    error = frame.get("error")
    headers = {}
    if error:
        headers["X-Shmfetch-Error"] = error
    if frame.get("status") is not None:
        headers["X-Shmfetch-Upstream-Status"] = str(frame["status"])
    if frame.get("truncated"):  # a PDF past [pdf] max_pages: a plain-text body says so here
        headers["X-Shmfetch-Truncated"] = "true"
    status = http_status(error)
    if want_json:
        body = json.dumps({k: frame.get(k) for k in RESULT_FIELDS}, ensure_ascii=False)
        return web.Response(text=body, status=status, headers=headers, content_type="application/json")
    if error:
        text = f"{error}: {frame.get('message') or ERRORS.get(error, error)}\n"
    else:
        text = frame.get("text") or ""
    # errors="replace": a lone surrogate in extracted text must not turn a fetched page into a 500
    body = text.encode("utf-8", "replace")
    ctype = "text/markdown" if markdown and not error else "text/plain"
    return web.Response(body=body, status=status, headers=headers, content_type=ctype, charset="utf-8")


class HttpApi:
    """The HTTP server and its live connections; started and stopped by the master."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        stats: Callable[[], dict[str, Any]],
        max_connections: int,
        fetch_cfg: FetchConfig | None = None,
    ):
        self.dispatcher = dispatcher
        self.stats = stats
        self.max_connections = max_connections
        self.fetch_cfg = fetch_cfg or FetchConfig()  # the bounds of per-request options
        self.ids = itertools.count(1)
        self.runner: web.AppRunner | None = None
        self.server: asyncio.AbstractServer | None = None

    @property
    def connections(self) -> list[Any]:
        return list(self.runner.server.connections) if self.runner and self.runner.server else []

    async def start(self, listen: str) -> None:
        app = web.Application(client_max_size=1024)  # GET only: no request body worth reading
        app.router.add_get("/fetch", self._fetch, allow_head=False)
        app.router.add_get("/stats", self._stats, allow_head=False)
        app.router.add_get("/metrics", self._metrics, allow_head=False)
        # handler_cancellation: a client that hangs up cancels its handler, which marks its job's sink
        # closed, so a request still queued in the master is skipped instead of fetched for nobody.
        self.runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, max_line_size=MAX_LINE_BYTES
        )
        await self.runner.setup()
        host, port = parse_listen(listen)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._protocol, host, port, backlog=1024)

    def _protocol(self) -> asyncio.Protocol:
        if len(self.runner.server.connections) >= self.max_connections:
            # aiohttp has no connection cap of its own; past max_connections, refuse like the Unix socket.
            return _Refuse()
        return self.runner.server()

    async def _fetch(self, request: web.Request) -> web.Response:
        want_json = "application/json" in request.headers.get("Accept", "")
        try:
            url = request.query.get("url")
        except UnicodeDecodeError:
            url = None
        if not url:
            frame = {
                "url": url,
                "ok": False,
                "error": "bad_request",
                "message": "missing query parameter 'url'",
            }
            return frame_response(frame, want_json)
        if problem := url_problem(url):
            return frame_response(
                {"url": url, "ok": False, "error": "invalid_url", "message": problem}, want_json
            )
        try:
            options = self._options(request)
        except OptionError as e:
            return frame_response(
                {"url": url, "ok": False, "error": "bad_request", "message": str(e)}, want_json
            )
        sink = _Waiter(asyncio.get_running_loop().create_future())
        job = Job(sink, next(self.ids), url, options)
        self.dispatcher.submit(job)  # a refusal resolves the future at once
        try:
            frame = await sink.fut
        finally:
            sink.closed = True
        mode = (options or {}).get("mode", self.fetch_cfg.mode)
        return frame_response(frame, want_json, markdown=mode == "markdown")

    def _options(self, request: web.Request) -> dict[str, Any] | None:
        """The query parameters other than ``url``, checked as request options; Accept may pick Markdown."""
        raw: dict[str, Any] = {}
        for key, value in request.query.items():
            if key == "url":
                continue
            if key in raw:
                raise OptionError(f"option {key!r} is given twice")
            raw[key] = value
        if "mode" not in raw and "text/markdown" in request.headers.get("Accept", ""):
            raw["mode"] = "markdown"
        return check(raw or None, self.fetch_cfg)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.stats()), content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = metrics.render(self.stats, __version__)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close_all(self, timeout: float = 2.0) -> None:
        """Finish the responses in progress (bounded: the master has answered every job), then close."""
        if self.runner is not None:
            await self.runner.server.shutdown(timeout)
            await self.runner.cleanup()


class _Refuse(asyncio.Protocol):
    """One connection too many: a 503 and close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = b"too many connections\n"
        transport.write(  # type: ignore[attr-defined]
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.close()
