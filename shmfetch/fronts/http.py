"""The optional HTTP API: ``GET /fetch?url=...``, ``POST /crawl``, ``GET /stats`` and ``GET /metrics``
(Prometheus, see metrics.py), inside the master's event loop.

``POST /crawl`` takes a JSON body ``{"seeds": [...], "depth": .., "max_pages": .., "scope": ..,
"include": [..], "exclude": [..], "robots": .., "options": {per-request options}}`` (docs/CRAWL.md) and
answers ``application/x-ndjson``, streamed as the pages come: one result object per page (the fields of
``/fetch``'s JSON, with ``crawl_depth`` and ``referrer``), then ``{"summary": {...}}``. A refused crawl
(a bad seed, rule or option, or a body that is not a JSON object) is a 400 with ``{"error", "message"}``.
A client that hangs up stops its crawl.

``/fetch`` takes the per-request options (shmfetch/options.py) as further query parameters:
``/fetch?url=...&mode=markdown&links=true&timeout=2``. The answer's form is negotiated from ``Accept``
with its q-values (RFC 9110 section 12.5.1, ``negotiate``): ``application/json`` gives the result's JSON
Lines fields, ``text/markdown`` asks for Markdown when no ``mode`` is given (served as ``text/markdown``),
else the text as ``text/plain``. An unknown parameter, a bad value or a repeated one (``url`` too) is a
400 ``bad_request`` naming it. ``HEAD`` is answered as ``GET``, without the body.

Guards, in one middleware (``_guard``) before any handler:
  * ``Host`` (and ``Origin``, when sent) must name the listen address or one of ``[http] allowed_hosts``:
    a web page cannot drive a browser at the API by DNS rebinding (403 otherwise);
  * with a token (``[http] token_file`` or ``$SHMFETCH_HTTP_TOKEN``), every request carries
    ``Authorization: Bearer <token>``, compared in constant time; a missing or wrong one gets 401 with
    ``WWW-Authenticate: Bearer``. ``/metrics`` is exempt with ``[http] metrics_public = true``.
Refusals are counted by reason (``shmfetch_http_rejected_total`` in /metrics), never by token.
``[http] header_timeout`` bounds the time a connection may take to send a request's headers (and sit idle
between requests): a half-sent request cannot hold a connection slot.

Off unless ``[http] listen = HOST:PORT``. Served by ``aiohttp.web`` on the master's loop: a request goes
through the one intake path (shmfetch/intake.py) with a Sink that is a future the request handler awaits,
so an HTTP request costs the same checks, queueing, credit and counting as one from the Unix socket.
aiohttp was measured against h11 on an asyncio Protocol (docs/OPERATIONS.md, "HTTP API"): its C parser
adds less master CPU per request.

We own the listening socket (``loop.create_server`` with aiohttp's protocol factory) rather than use
aiohttp's sites, so that the master can stop accepting synchronously, like the Unix listener.

Without a token, anyone who can reach the port can make the daemon fetch whatever the SSRF policy allows:
``serve`` refuses a listen address beyond loopback without one unless ``[http] allow_unauthenticated``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import itertools
import json
import logging
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .._version import __version__
from ..config import ConfigError, HttpConfig, http_token, is_loopback_host
from ..intake import Intake
from ..job import answer
from ..options import OptionError
from ..protocol import ERRORS, RESULT_FIELDS, CrawlSummary
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
MAX_BODY_BYTES = 1 << 20  # POST /crawl's JSON body (seeds and rules); the GET routes take none
MAX_STREAM_TEXT = 64 << 20  # characters of results a POST /crawl client may leave unread (see _Stream)


def http_status(error: str | None) -> int:
    """The HTTP status for a result's error code (None = success)."""
    return 200 if error is None else HTTP_STATUS.get(error, UPSTREAM_FAILURE)


# The answer's forms, by media type.
FORMS = {"text/plain": "text", "application/json": "json", "text/markdown": "markdown"}
# Ties in q and specificity: among types the client names, JSON, then Markdown, then text (as before
# q-values counted, naming one of them chose it); among wildcard matches (``*/*``, ``text/*``), text.
_NAMED_PREFERENCE = {"json": 2, "markdown": 1, "text": 0}
_WILDCARD_PREFERENCE = {"text": 2, "markdown": 1, "json": 0}


def _accept_ranges(accept: str) -> list[tuple[str, str, float]]:
    """``Accept`` -> [(type, subtype, q)]; a malformed q counts as 0 (RFC 9110 12.4.2: 0 to 1)."""
    out = []
    for part in accept.split(","):
        media, *params = part.split(";")
        typ, _, sub = media.strip().lower().partition("/")
        if not typ or not sub:
            continue
        q = 1.0
        for p in params:
            name, _, value = p.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                q = q if 0.0 <= q <= 1.0 else 0.0
        out.append((typ, sub, q))
    return out


def negotiate(accept: str | None, markdown_offered: bool = True) -> str:
    """The form of the answer ("text", "json" or "markdown") for an ``Accept`` header: the form with the
    highest q, each form taking the q of the most specific range that matches it (RFC 9110 section
    12.5.1); on a tie the more specific match, then the preferences above. Nothing acceptable, or no
    header: "text"."""
    ranges = _accept_ranges(accept or "*/*")
    best, best_key = "text", (0.0, -1, 0)
    for media, form in FORMS.items():
        if form == "markdown" and not markdown_offered:
            continue
        typ, sub = media.split("/")
        match = None  # (specificity, q) of the most specific matching range
        for rtyp, rsub, q in ranges:
            spec = 2 if (rtyp, rsub) == (typ, sub) else 1 if (rtyp == typ and rsub == "*") else 0
            if (rtyp, rsub) in ((typ, sub), (typ, "*"), ("*", "*")) and (match is None or spec > match[0]):
                match = (spec, q)
        if match is None or match[1] <= 0:
            continue
        prefer = _NAMED_PREFERENCE if match[0] == 2 else _WILDCARD_PREFERENCE
        key = (match[1], match[0], prefer[form])
        if key > best_key:
            best, best_key = form, key
    return best


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


class _Stream:
    """The Sink of one ``POST /crawl``: the crawl's answers queue here for the handler to write out.

    A client that reads slower than the crawl fetches is cut off once ``MAX_STREAM_TEXT`` characters of
    text wait for it (as the Unix socket cuts off at ``client_buffer_bytes``): its crawl stops."""

    __slots__ = ("closed", "answers", "waiting")

    def __init__(self) -> None:
        self.closed = False
        self.answers: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.waiting = 0  # characters of text queued

    def send(self, frame: dict[str, Any]) -> None:
        if self.closed:
            return
        self.waiting += len(frame.get("text") or "")
        if self.waiting > MAX_STREAM_TEXT:
            log.warning("cutting off a crawl's HTTP client that does not read its results")
            self.closed = True
            self.answers.put_nowait(None)
            return
        self.answers.put_nowait(frame)

    async def next(self) -> dict[str, Any] | None:
        frame = await self.answers.get()
        if frame is not None:
            self.waiting -= len(frame.get("text") or "")
        return frame


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
        intake: Intake,
        stats: Callable[[], dict[str, Any]],
        max_connections: int,
        http_cfg: HttpConfig | None = None,
    ):
        self.intake = intake
        self.stats = stats
        self.max_connections = max_connections
        self.http_cfg = http_cfg or HttpConfig()
        self.ids = itertools.count(1)
        self.runner: web.AppRunner | None = None
        self.server: asyncio.AbstractServer | None = None
        self.token_digest: bytes | None = None  # sha256 of the token: compared, never the token itself
        self.hosts = HostGuard("", self.http_cfg.allowed_hosts)
        self.rejected: Counter[str] = Counter()  # refusals by reason, for /metrics
        self._header_timers: dict[Any, asyncio.TimerHandle] = {}

    @property
    def connections(self) -> list[Any]:
        return list(self.runner.server.connections) if self.runner and self.runner.server else []

    async def start(self, listen: str) -> None:
        try:
            token = http_token(self.http_cfg)
        except ConfigError as e:  # serve checked it at start; the file changed since
            raise OSError(str(e)) from None
        self.token_digest = _digest(token) if token is not None else None
        host, port = parse_listen(listen)
        self.hosts = HostGuard(host, self.http_cfg.allowed_hosts)
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._guard])
        app.router.add_get("/fetch", self._fetch)  # and HEAD: the same answer without its body
        app.router.add_post("/crawl", self._crawl)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/metrics", self._metrics)
        # handler_cancellation: a client that hangs up cancels its handler, which marks its job's sink
        # closed, so a request still queued in the master is skipped instead of fetched for nobody.
        self.runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, max_line_size=MAX_LINE_BYTES
        )
        await self.runner.setup()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._protocol, host, port, backlog=1024)

    def _protocol(self) -> asyncio.Protocol:
        if len(self.runner.server.connections) >= self.max_connections:
            # aiohttp has no connection cap of its own; past max_connections, refuse like the Unix socket.
            return _Refuse()
        handler = self.runner.server()
        self._arm_header_timer(handler)
        return handler

    # -- guards -------------------------------------------------------------------------------------

    def _arm_header_timer(self, handler: Any) -> None:
        """A connection must deliver a request's headers within ``header_timeout`` (aiohttp has no such
        bound): from its start and after each response. The guard cancels it when a request arrives."""
        loop = asyncio.get_running_loop()
        self._header_timers[handler] = loop.call_later(
            self.http_cfg.header_timeout, self._header_timeout, handler
        )

    def _header_timeout(self, handler: Any) -> None:
        self._header_timers.pop(handler, None)
        if handler.transport is not None:
            handler.force_close()

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Host/Origin and token checks before any handler; the connection's header timer meanwhile."""
        timer = self._header_timers.pop(request.protocol, None)
        if timer is not None:
            timer.cancel()
        try:
            response = self._refusal(request) or await handler(request)
            # Sent here rather than by aiohttp after us, so that the next request's timer starts once the
            # response is out, not while a slow reader still takes it (aiohttp skips a sent response).
            await response.prepare(request)
            await response.write_eof()
            return response
        finally:
            if request.protocol.transport is not None:
                self._arm_header_timer(request.protocol)

    def _refusal(self, request: web.Request) -> web.Response | None:
        """The 403 or 401 answer for a request that fails a guard, or None."""
        if not self.hosts.allows_host(request.headers.get("Host")):
            return self._reject("foreign_host", 403, "the Host header names no address this API serves")
        origin = request.headers.get("Origin")
        if origin is not None and not self.hosts.allows_origin(origin):
            return self._reject("foreign_origin", 403, "requests from that Origin are not accepted")
        if self.token_digest is None or (request.path == "/metrics" and self.http_cfg.metrics_public):
            return None
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return self._reject("missing_token", 401, "this API needs Authorization: Bearer <token>")
        # Digests of equal length, compared in constant time: neither the token nor its length leaks.
        if not hmac.compare_digest(_digest(given.strip()), self.token_digest):
            return self._reject("wrong_token", 401, "wrong token", 'Bearer error="invalid_token"')
        return None

    def _reject(self, reason: str, status: int, message: str, challenge: str = "Bearer") -> web.Response:
        self.rejected[reason] += 1
        headers = {"WWW-Authenticate": challenge} if status == 401 else {}
        return web.Response(text=f"{message}\n", status=status, headers=headers)

    # -- handlers -----------------------------------------------------------------------------------

    async def _fetch(self, request: web.Request) -> web.Response:
        form = negotiate(request.headers.get("Accept"), markdown_offered=_mode_param(request) is None)
        want_json = form == "json"
        sink = _Waiter(asyncio.get_running_loop().create_future())
        job = None
        try:
            url = _url_param(request)
        except (UnicodeDecodeError, OptionError) as e:
            message = str(e) if isinstance(e, OptionError) else "query parameter 'url' is not UTF-8"
            answer(sink, {"url": None, "ok": False, "error": "bad_request", "message": message})
        else:
            if not url:
                missing = "missing query parameter 'url'"
                answer(sink, {"url": url, "ok": False, "error": "bad_request", "message": missing})
            else:
                # a refusal (invalid_url, bad_request) or the dispatcher's shutting_down/overloaded
                # resolves the future at once
                job = self.intake.request(sink, next(self.ids), url, self._raw_options(request, form))
        try:
            frame = await sink.fut
        finally:
            sink.closed = True
        mode = ((job.options if job else None) or {}).get("mode", self.intake.fetch_cfg.mode)
        return frame_response(frame, want_json, markdown=mode == "markdown")

    async def _crawl(self, request: web.Request) -> web.StreamResponse:
        """``POST /crawl``: start the crawl through the intake, then stream its answers as NDJSON."""
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return _json_error("bad_request", "the body must be a JSON object: {\"seeds\": [...], ...}")
        sink = _Stream()
        rules = {k: v for k, v in body.items() if k not in ("seeds", "options")}
        try:
            if not self.intake.crawl(sink, next(self.ids), body.get("seeds"), rules, body.get("options")):
                refusal = sink.answers.get_nowait()
                return _json_error(refusal["error"], refusal["message"])
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            while True:
                frame = await sink.next()
                if frame is None:  # cut off: it did not read
                    return response
                if "summary" in frame:
                    await response.write(_ndjson({"summary": CrawlSummary.from_frame(frame).to_dict()}))
                    return response
                await response.write(_ndjson({k: frame.get(k) for k in RESULT_FIELDS}))
        finally:
            sink.closed = True  # a client that hung up cancelled us: its crawl stops

    @staticmethod
    def _raw_options(request: web.Request, form: str) -> dict[str, Any] | OptionError | None:
        """The query parameters other than ``url``, as request options (the intake checks them); Accept
        may pick Markdown. A parameter given twice is an OptionError, reported after the URL's check."""
        raw: dict[str, Any] = {}
        for key, value in request.query.items():
            if key == "url":
                continue
            if key in raw:
                return OptionError(f"option {key!r} is given twice")
            raw[key] = value
        if "mode" not in raw and form == "markdown":
            raw["mode"] = "markdown"
        return raw or None

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.stats()), content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = metrics.render(self.stats, __version__, http_rejected=dict(self.rejected))
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close_all(self, timeout: float = 2.0) -> None:
        """Finish the responses in progress (bounded: the master has answered every job), then close."""
        for timer in self._header_timers.values():
            timer.cancel()
        self._header_timers.clear()
        if self.runner is not None:
            await self.runner.server.shutdown(timeout)
            await self.runner.cleanup()


def _ndjson(obj: dict[str, Any]) -> bytes:
    # errors="replace": a lone surrogate in extracted text must not end the stream
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8", "replace")


def _json_error(code: str, message: str) -> web.Response:
    body = json.dumps({"error": code, "message": message})
    return web.Response(text=body, status=http_status(code), content_type="application/json")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _url_param(request: web.Request) -> str | None:
    """The one ``url`` query parameter; a repeated one is a bad request (which would we fetch?)."""
    urls = request.query.getall("url", [])
    if len(urls) > 1:
        raise OptionError("query parameter 'url' is given twice")
    return urls[0] if urls else None


def _mode_param(request: web.Request) -> str | None:
    try:
        return request.query.get("mode")
    except UnicodeDecodeError:
        return None


class HostGuard:
    """Which ``Host`` and ``Origin`` values a request may carry: the listen address (any address when it
    listens on all of them), ``localhost`` and the loopback addresses when it listens on loopback, and
    ``[http] allowed_hosts``.

    Against DNS rebinding: a page of evil.example whose name is re-pointed at this machine makes the
    browser send ``Host: evil.example``. An address literal cannot be re-pointed, so only names need the
    list. Ports are not compared: the socket already fixed the port."""

    def __init__(self, listen_host: str, allowed: tuple[str, ...]):
        self.listen = _address(listen_host)
        self.any_address = self.listen is not None and self.listen.is_unspecified
        self.loopback = is_loopback_host(listen_host)
        self.names = {n.lower().rstrip(".") for n in allowed}
        if self.loopback:
            self.names.add("localhost")
        if self.listen is None and listen_host:
            self.names.add(listen_host.lower().rstrip("."))

    def allows_host(self, host: str | None) -> bool:
        if host is None:
            return True  # HTTP/1.0 without Host: no browser sends that
        return self._allows(_host_part(host))

    def allows_origin(self, origin: str) -> bool:
        try:
            name = urllib.parse.urlsplit(origin.strip()).hostname
        except ValueError:
            return False
        return name is not None and self._allows(name)  # "null" (an opaque origin) has no host

    def _allows(self, name: str) -> bool:
        name = name.lower().rstrip(".")
        addr = _address(name)
        if addr is not None:
            return self.any_address or addr == self.listen or (self.listen is None and self.loopback and addr.is_loopback)
        return name in self.names


def _host_part(host: str) -> str:
    """``name[:port]`` or ``[v6]:port`` -> the name or address."""
    host = host.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


class _Refuse(asyncio.Protocol):
    """One connection too many: a 503 and close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = b"too many connections\n"
        transport.write(  # type: ignore[attr-defined]
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.close()
