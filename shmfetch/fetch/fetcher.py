"""Download one URL with requests and turn it into text, under a strict policy (docs/FETCH.md).

* One total deadline per fetch (``[fetch] timeout``) covers DNS, connect, every redirect hop, retries and
  the body. Each socket operation gets the *remaining* time as its timeout, the body is read with
  ``read1`` so a drip feed returns control after every packet, and a watchdog thread shuts the socket
  down at the deadline so that nothing (a slow header drip, a stuck TLS handshake) can hold a fetch longer.
* Redirects are followed by hand so that each hop is checked against the URL rules and the SSRF policy.
* SSRF: we resolve the host ourselves, vet every address, and the connection class connects only to those
  vetted addresses (DNS rebinding cannot swap them), while Host, SNI and certificate checks keep the name.
* Caps: ``max_bytes`` on the bytes received, ``max_decoded_bytes`` after decompression (content.py,
  incrementally, so a bomb stops at the cap), ``max_text_bytes`` on the UTF-8 text.

``Fetcher.fetch`` never raises: every failure is an ``Outcome`` with one of the codes in protocol.ERRORS.
"""

from __future__ import annotations

import errno
import heapq
import http.cookiejar
import itertools
import logging
import socket
import threading
import time
import urllib.parse
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as u3conn

from ..config import FetchConfig, PdfConfig, SecurityConfig
from ..extract.html import xml_to_text
from ..extract.maintext import html_text
from ..extract.pagemeta import page_fields
from ..extract.pdf import LOCK as PDFIUM_LOCK
from ..extract.pdf import extract_pdf
from ..options import Options, effective
from ..protocol import PAUSE_CODES, Outcome
from . import charset
from .content import (
    GENERIC_TYPES,
    PDF_MAGIC,
    ContentError,
    Decoder,
    content_codings,
    http_date,
    kind_of,
    looks_binary,
    sniff,
)
from .netpolicy import BlockedAddress, DnsError, NetPolicy, resolve, vet

log = logging.getLogger("shmfetch.fetch")

REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))
RETRY_CODES = frozenset((429, 502, 503, 504))
CHUNK = 64 * 1024
SNIFF_BYTES = 1024
BACKOFF_BASE = 0.1  # seconds; doubled per attempt, always cut to the remaining deadline


class ExtractGate:
    """How many threads of this process may decode and extract at once.

    Decoding and extraction hold the GIL for most of their time, so running them in every fetch thread at
    once gains nothing and multiplies the peak memory (a parsed tree is ~10x its page). Two at a time kept
    loadgen's pages/s (204 vs 199 unlimited, 188 with one) and the worker's peak RSS at 57-59 MiB instead
    of 61-67 MiB (docs/BENCHMARKS.md, P5). A fetch waits for a slot only until its deadline.
    """

    def __init__(self, slots: int):
        self._sem = threading.BoundedSemaphore(slots)

    def acquire(self, timeout: float) -> bool:
        return self._sem.acquire(timeout=max(timeout, 0.0))

    def try_acquire(self) -> bool:
        return self._sem.acquire(blocking=False)

    def release(self) -> None:
        self._sem.release()


EXTRACT_GATE = ExtractGate(2)
# Main content and Markdown (trafilatura) take 3-5x as long per page as full text: they get slots of their
# own, so that pages in those modes queue behind each other and never hold up a full-text page.
MAIN_EXTRACT_GATE = ExtractGate(2)
WATCHDOG_GRACE = 0.05  # our own clock checks should win; the watchdog is the backstop


class FetchError(Exception):
    """A failure with its stable error code; turned into an Outcome at the top of Fetcher.fetch."""

    def __init__(self, code: str, message: str, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.url = url


# -- deadline watchdog ----------------------------------------------------------------------------------


class _Ctx:
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


class _Watchdog:
    """One thread for all Fetchers in the process: a heap of (deadline, ctx, generation)."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.heap: list[tuple[float, int, _Ctx, int]] = []
        self.seq = itertools.count()
        self.thread: threading.Thread | None = None

    def arm(self, when: float, ctx: _Ctx, generation: int) -> None:
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


# -- pinned connections -----------------------------------------------------------------------------


def _pin_host(host: str) -> str:
    return host.lower().strip("[]").rstrip(".")


def _connect_failure(e: OSError, addr: str, port: int) -> str:
    """``connection refused: 127.0.0.1:1``: what failed and where, without urllib3's wrappers."""
    reason = "connection refused" if e.errno == errno.ECONNREFUSED else (e.strerror or str(e)).lower()
    where = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    return f"{reason}: {where}"


def _new_connection_reason(e: BaseException) -> str | None:
    """The message of the NewConnectionError inside requests' ConnectionError(MaxRetryError(...)), if any."""
    cur: object = e
    for _ in range(4):
        if isinstance(cur, NewConnectionError):
            return cur._message
        cur = getattr(cur, "reason", None) or (cur.args[0] if getattr(cur, "args", None) else None)
    return None


class _PinMixin:
    """Connect only to the addresses Fetcher vetted for this host; keep the name for Host, SNI and certs."""

    _ctx: _Ctx

    def _new_conn(self) -> socket.socket:
        host, port = self.host, self.port  # type: ignore[attr-defined]
        addrs = self._ctx.pins.get((_pin_host(host), port))
        if not addrs:
            # Fail closed: a connection we did not vet (should not happen) is never opened.
            raise NewConnectionError(self, f"shmfetch: no vetted address for {host}:{port}")  # type: ignore[arg-type]
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
                raise ConnectTimeoutError(self, f"connect to {addr}:{port} timed out") from e
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


class _PinnedAdapter(HTTPAdapter):
    def __init__(self, ctx: _Ctx, **kw: Any):
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


# -- the fetcher ------------------------------------------------------------------------------------


def check_url(url: str) -> urllib.parse.SplitResult:
    """Parse and vet a URL without touching the network. Raises FetchError(invalid_url/unsupported_scheme)."""
    if not isinstance(url, str) or not url or len(url) > 65536:
        raise FetchError("invalid_url", "empty or oversized URL")
    url = url.strip(" ")
    # Control characters could smuggle headers (CR/LF) or truncate (NUL); spaces in a path are quoted.
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise FetchError("invalid_url", "URL contains control characters")
    try:
        u = urllib.parse.urlsplit(url)
        port = u.port
    except ValueError as e:
        raise FetchError("invalid_url", f"cannot parse URL: {e}") from None
    scheme = u.scheme.lower()
    if not scheme:
        raise FetchError("invalid_url", "URL has no scheme")
    if scheme not in ("http", "https"):
        raise FetchError("unsupported_scheme", f"scheme {scheme!r} is not fetched (only http, https)")
    if not u.hostname:
        raise FetchError("invalid_url", "URL has no host")
    if any(c in u.hostname for c in ' <>"{}|\\^`'):
        raise FetchError("invalid_url", f"bad character in host {u.hostname!r}")
    if port == 0:
        raise FetchError("invalid_url", "port 0")
    try:
        u.hostname.encode("idna")
    except UnicodeError as e:
        raise FetchError("invalid_url", f"bad host name: {e}") from None
    return u


def _conditional_headers(opts: Options) -> dict[str, str] | None:
    """If-None-Match / If-Modified-Since from the master's request options, or None."""
    headers = {}
    if opts.if_none_match:
        headers["If-None-Match"] = str(opts.if_none_match)
    if opts.if_modified_since:
        headers["If-Modified-Since"] = str(opts.if_modified_since)
    return headers or None


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = http_date(value)
    return None if when is None else max(0.0, when - now)


_NO_COOKIES = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])  # accepts and returns nothing


class Fetcher:
    """Fetches URLs for one thread: owns one requests.Session, so keep-alive connections are reused.

    ``answer_pauses``: answer 429 and 503 at once instead of retrying them here (the daemon's workers, whose
    master pauses the host for every worker and retries; and robots.txt fetches). ``pdf``: the [pdf]
    section; without it (or with ``enabled = false``) PDFs are ``unsupported_content_type``.
    """

    def __init__(
        self,
        cfg: FetchConfig,
        security: SecurityConfig,
        answer_pauses: bool = False,
        pdf: PdfConfig | None = None,
    ):
        self.cfg = cfg
        self.pdf = pdf if pdf is not None and pdf.enabled else None
        self.security = security
        self.policy = NetPolicy(security.allow_networks, security.deny_networks)
        self._ctx = _Ctx()
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or netrc from the environment: they bypass the policy
        # No cookie jar: one thread's Session serves every client in turn, and a cookie one client's page
        # set must never be sent on another client's fetch. (Within a fetch, redirect hops send none
        # either: a browser-like login flow is not what a text fetcher is for.)
        self.session.cookies.set_policy(_NO_COOKIES)
        self.session.headers["User-Agent"] = cfg.user_agent
        self.session.headers["Accept-Encoding"] = "gzip, deflate, br"
        self.session.headers["Accept"] = (
            "text/html,application/xhtml+xml,application/xml;q=0.9,text/plain;q=0.8,*/*;q=0.1"
        )
        if getattr(cfg, "ca_bundle", ""):
            self.session.verify = cfg.ca_bundle
        adapter = _PinnedAdapter(self._ctx)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.defaults = effective(None, cfg)
        # With answer_pauses a 429/503 is answered at once, for the caller to pause the host and retry (the
        # daemon's master, for every worker) or to treat as unreachable (robots.txt); the other gateway
        # errors (502, 504) are still retried here.
        self._retry_codes = RETRY_CODES - PAUSE_CODES if answer_pauses else RETRY_CODES
        self.opts = self.defaults  # those of the fetch in progress (a Fetcher serves one thread)
        self._received = 0  # body bytes of the response being read (Outcome.body_bytes)

    def close(self) -> None:
        self.session.close()

    # The public entry point: everything below may raise; here it becomes an Outcome.
    def fetch(self, url: str, opts: Options | None = None) -> Outcome:
        """Fetch ``url`` with the request's options (shmfetch.options.effective), else the config's."""
        return self._run(url, opts or self.defaults, self._finish)

    def fetch_raw(self, url: str, limit: int) -> Outcome:
        """The body of ``url`` as text (UTF-8, errors replaced), its first ``limit`` bytes only, not
        extracted: for robots.txt (RFC 9309 parses a prefix of an oversized file). Same policy otherwise."""

        def finish(r: requests.Response, final: str, deadline: float) -> Outcome:
            body = self._read_prefix(r, deadline, limit)
            return Outcome(
                200 <= r.status_code < 300, r.status_code, final, None, body.decode("utf-8", "replace")
            )

        return self._run(url, self.defaults, finish)

    def _run(self, url: str, opts: Options, finish: Any) -> Outcome:
        """One fetch under its deadline and watchdog, ``finish`` reading the final response."""
        self.opts = opts
        deadline = time.monotonic() + opts.timeout
        ctx = self._ctx
        gen = ctx.generation
        _watchdog.arm(deadline + WATCHDOG_GRACE, ctx, gen)
        state: dict[str, Any] = {"url": url if isinstance(url, str) else None, "status": None, "retries": 0}
        try:
            out = self._fetch(url, deadline, state, opts, finish)
            out.retries = state["retries"]
        except FetchError as e:
            out = Outcome(False, e.status or state["status"], e.url or state["url"], None, "", e.code, str(e))
        except ContentError as e:
            out = Outcome(False, state["status"], state["url"], None, "", e.code, str(e))
        except Exception as e:
            code, msg = self._classify(e, deadline)
            if code == "internal_error":
                log.exception("unexpected error fetching %s", url)
            out = Outcome(False, state["status"], state["url"], None, "", code, msg)
        finally:
            with ctx.lock:
                ctx.generation += 1
                ctx.sock = None
                ctx.pins.clear()
        out.answered_at = state.get("answered_at")
        return out

    @staticmethod
    def _classify(e: Exception, deadline: float) -> tuple[str, str]:
        msg = f"{type(e).__name__}: {e}"
        if isinstance(e, BlockedAddress):
            return "blocked_address", str(e)
        if isinstance(e, DnsError):
            return "dns_error", str(e)
        if time.monotonic() >= deadline or isinstance(e, (requests.Timeout, TimeoutError)):
            return "timeout", "the fetch did not finish within the timeout: " + msg
        if isinstance(e, requests.exceptions.SSLError):
            return "tls_error", msg
        if isinstance(e, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
            return "invalid_url", msg
        if isinstance(e, requests.exceptions.InvalidSchema):
            return "unsupported_scheme", msg
        if isinstance(e, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            short = _new_connection_reason(e)
            if short is None:
                return "connect_error", msg
            log.debug("connect_error detail: %s", msg)  # requests' chain of wrappers, for the log only
            return "connect_error", short
        if isinstance(e, (urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError, ConnectionError)):
            return "connect_error", msg
        return "internal_error", msg

    @staticmethod
    def _remaining(deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError("timeout", "the fetch did not finish within the timeout")
        return left

    def _pin(self, u: urllib.parse.SplitResult, deadline: float) -> None:
        """Resolve and vet the host of ``u``; the connection classes connect only to what we pin here."""
        host = _pin_host(u.hostname or "")
        port = u.port or (443 if u.scheme.lower() == "https" else 80)
        key = (host, port)
        if key in self._ctx.pins:
            return
        try:
            addrs = resolve(host, port, self._remaining(deadline))
        except TimeoutError:
            raise FetchError("timeout", f"DNS lookup of {host!r} did not finish within the timeout") from None
        vet(self.policy, addrs)
        self._ctx.pins[key] = addrs

    def _read_prefix(self, r: requests.Response, deadline: float, limit: int) -> bytes:
        """At most ``limit`` decoded bytes of the body; the rest is not read. Decoded by ``Decoder`` as a
        page is, so a compressed bomb costs ``limit`` bytes here too, and a body that stops short of
        ``limit`` within ``max_bytes`` received is read to its end."""
        enc = content_codings(r.headers.get("Content-Encoding", ""))
        decoder = Decoder(enc, limit, truncate=True) if enc else None
        out = bytearray()
        received = 0
        while len(out) < limit and received <= self.cfg.max_bytes:
            chunk = self._next_chunk(r, deadline)
            if not chunk:
                break
            received += len(chunk)
            if decoder is not None:
                decoder.feed_into(chunk, out)
            else:
                out += chunk
        if decoder is not None and len(out) < limit:
            decoder.feed_into(b"", out)  # what the decoder still holds, as _read_body takes it
        return bytes(out[:limit])

    def _fetch(self, url: str, deadline: float, state: dict[str, Any], opts: Options, finish: Any) -> Outcome:
        cfg = self.cfg
        attempt = 0  # retries made so far; at most cfg.retries
        hops = 0
        check_url(url)
        conditional = _conditional_headers(opts)
        own_retry_codes = self._retry_codes
        while True:
            state["url"] = url
            state["retries"] = attempt
            # Pin the host exactly as urllib3 will see it (IDNA-encoded by requests, trailing dot dropped).
            # Validators go only to the URL they belong to, not to a redirect target.
            headers = dict(conditional) if conditional and hops == 0 else {}
            if opts.accept_language:
                headers["Accept-Language"] = opts.accept_language
            prep = self.session.prepare_request(requests.Request("GET", url, headers=headers))
            self._pin(urllib.parse.urlsplit(prep.url), deadline)
            left = self._remaining(deadline)
            try:
                r = self.session.send(prep, timeout=(left, left), stream=True, allow_redirects=False)
                state["answered_at"] = time.monotonic()
            except (requests.ConnectionError, urllib3.exceptions.ProtocolError) as e:
                if isinstance(e, (requests.exceptions.SSLError, requests.Timeout)) or attempt >= cfg.retries:
                    raise
                attempt += 1
                self._backoff(attempt, None, deadline, e)
                continue
            try:
                state["status"] = r.status_code
                if r.status_code in REDIRECT_CODES and r.headers.get("Location"):
                    hops += 1
                    if hops > cfg.max_redirects:
                        raise FetchError(
                            "too_many_redirects",
                            f"more than max_redirects={cfg.max_redirects} redirects",
                            r.status_code,
                            url,
                        )
                    try:
                        url = urllib.parse.urljoin(url, r.headers["Location"])
                    except ValueError as e:
                        raise FetchError(
                            "invalid_url", f"bad redirect Location: {e}", r.status_code
                        ) from None
                    check_url(url)
                    continue
                if r.status_code in own_retry_codes and attempt < cfg.retries:
                    wait = _retry_after(r.headers.get("Retry-After"), time.time())
                    if self._can_retry(attempt + 1, wait, deadline):
                        attempt += 1
                        self._backoff(attempt, wait, deadline, None)
                        continue
                try:
                    return finish(r, url, deadline)
                except (requests.ConnectionError, urllib3.exceptions.ProtocolError,
                        requests.exceptions.ChunkedEncodingError) as e:  # fmt: skip
                    # Reset in the middle of the body: a GET is safe to repeat.
                    if attempt >= cfg.retries or time.monotonic() >= deadline:
                        raise
                    attempt += 1
                    self._backoff(attempt, None, deadline, e)
                    continue
            finally:
                r.close()

    @staticmethod
    def _delay(attempt: int, wait: float | None) -> float:
        """Before retry number ``attempt`` (1, 2, ...): the server's Retry-After, else exponential backoff."""
        return wait if wait is not None else BACKOFF_BASE * (2 ** (attempt - 1))

    @staticmethod
    def _can_retry(attempt: int, wait: float | None, deadline: float) -> bool:
        delay = Fetcher._delay(attempt, wait)
        # Only if there is time left for the wait *and* something of a request after it.
        return time.monotonic() + delay + 0.05 < deadline

    def _backoff(self, attempt: int, wait: float | None, deadline: float, err: Exception | None) -> None:
        delay = self._delay(attempt, wait)
        if time.monotonic() + delay >= deadline:
            if err is not None:
                raise err
            raise FetchError("timeout", "no time left to retry within the timeout")
        time.sleep(delay)

    def _read_body(self, r: requests.Response, deadline: float, first: bytes = b"") -> bytearray:
        """The decoded body, within the deadline and the byte caps."""
        cfg = self.cfg
        max_bytes = self.opts.max_bytes
        enc = content_codings(r.headers.get("Content-Encoding", ""))
        decoder = Decoder(enc, cfg.max_decoded_bytes) if enc else None
        received = 0
        out = bytearray()
        chunk = first
        while True:
            if chunk:
                received += len(chunk)
                self._received = received
                if received > max_bytes:
                    raise FetchError("too_large", f"body exceeds max_bytes={max_bytes}", r.status_code)
                if decoder is not None:
                    decoder.feed_into(chunk, out)
                elif received > cfg.max_decoded_bytes:
                    raise FetchError(
                        "too_large", f"body exceeds max_decoded_bytes={cfg.max_decoded_bytes}", r.status_code
                    )
                else:
                    out += chunk
            chunk = self._next_chunk(r, deadline)
            if not chunk:
                break
        if decoder is not None:
            decoder.feed_into(b"", out)
        return out  # a bytearray: bytes(out) would hold the body twice at the worker's peak

    def _next_chunk(self, r: requests.Response, deadline: float) -> bytes:
        """The next chunk of the raw (still encoded) body, waiting at most until ``deadline``; b"" at the
        body's end. ``timeout`` if the deadline passed, including an EOF the watchdog made by cutting the
        socket (that EOF is not the end of the body)."""
        sock = getattr(r.raw.connection, "sock", None) if r.raw.connection is not None else None
        if sock is not None:
            sock.settimeout(self._remaining(deadline))
        chunk = r.raw.read1(CHUNK, decode_content=False)
        if not chunk and time.monotonic() >= deadline:
            raise FetchError("timeout", "the body did not arrive within the timeout", r.status_code)
        return chunk

    def _finish(self, r: requests.Response, url: str, deadline: float) -> Outcome:
        out = self._finish_body(r, url, deadline)
        h = r.headers
        out.etag = h.get("ETag")
        out.last_modified = h.get("Last-Modified")
        out.cache_control = h.get("Cache-Control")
        out.expires = h.get("Expires")
        out.date = h.get("Date")
        out.retry_after = _retry_after(h.get("Retry-After"), time.time())
        out.body_bytes = self._received
        return out

    def _finish_body(self, r: requests.Response, url: str, deadline: float) -> Outcome:
        self._received = 0
        if r.status_code == 304:
            return Outcome(False, 304, url, None, "", "not_modified", "304 Not Modified")
        status = r.status_code
        ok = 200 <= status < 300
        ctype_header = r.headers.get("Content-Type", "")
        ctype = ctype_header.split(";", 1)[0].strip().lower()
        http_charset = requests.utils.get_encoding_from_headers({"content-type": ctype_header}) if (
            "charset" in ctype_header.lower()
        ) else None  # fmt: skip
        status_err = None if ok else ("http_status", f"HTTP {status} {r.reason or ''}".strip())
        first = b""
        if not ctype or (self.pdf is not None and ctype in GENERIC_TYPES):
            # Sniff on the decoded head of the body: a missing type, or a PDF sent as generic bytes.
            first = self._next_chunk(r, deadline)
            enc = content_codings(r.headers.get("Content-Encoding", ""))
            head = first
            if enc and first:
                head = bytearray()
                Decoder(enc, SNIFF_BYTES, truncate=True).feed_into(first, head)
            if not ctype:
                ctype = sniff(head[:SNIFF_BYTES]) if first else "text/plain"
            elif head.startswith(PDF_MAGIC):
                ctype = "application/pdf"
        kind = kind_of(ctype, pdf=self.pdf is not None)
        if kind is None:
            code, msg = status_err or ("unsupported_content_type", f"content type {ctype!r} is not extracted")
            return Outcome(False, status, url, ctype, "", code, msg)
        body = self._read_body(r, deadline, first)
        if kind == "pdf":
            return self._finish_pdf(body, status, url, ctype, status_err, deadline)
        if kind == "html" and looks_binary(body[:SNIFF_BYTES]):
            code, msg = status_err or ("decode_error", f"binary body served as {ctype}")
            return Outcome(False, status, url, ctype, "", code, msg)
        gate = EXTRACT_GATE if self.opts.mode == "text" or kind != "html" else MAIN_EXTRACT_GATE
        if not gate.acquire(self._remaining(deadline)):
            raise FetchError("timeout", "no extraction slot within the timeout", status, url)
        try:
            self._remaining(deadline)  # the wait may have used the rest of it: do not start a pass
            text, fail, page = self._extract(body, http_charset, kind, url)
        finally:
            gate.release()
            del body
        if fail:
            return Outcome(False, status, url, ctype, "", *(status_err or fail))
        self._remaining(deadline)
        if over := self._text_over_cap(text):
            return Outcome(False, status, url, ctype, "", "too_large", over)
        if status_err:
            return Outcome(False, status, url, ctype, text, *status_err, **page)
        return Outcome(True, status, url, ctype, text, **page)

    def _text_over_cap(self, text: str) -> str | None:
        """Why ``text`` is over ``max_text_bytes``, or None."""
        # UTF-8 takes at most 4 bytes a character: most texts are far under the cap without encoding
        # them here (the result packer encodes them once more anyway).
        n = 4 * len(text)
        if n > self.cfg.max_text_bytes:
            n = len(text.encode("utf-8", "surrogatepass"))
        return f"text of {n} bytes exceeds max_text_bytes" if n > self.cfg.max_text_bytes else None

    def _finish_pdf(
        self,
        body: bytearray,
        status: int,
        url: str,
        ctype: str,
        status_err: tuple[str, str] | None,
        deadline: float,
    ) -> Outcome:
        """A PDF body as an Outcome (shmfetch/extract/pdf.py), under the extraction gate.

        PDFium serves one thread of the process at a time: a PDF waits for it *before* taking an
        extraction slot, so PDFs queued behind one another hold no slot an HTML page could use.
        """
        if not PDFIUM_LOCK.acquire(timeout=self._remaining(deadline)):
            raise FetchError("timeout", "PDFium was busy with other PDFs until the timeout", status, url)
        try:
            if not EXTRACT_GATE.acquire(self._remaining(deadline)):
                raise FetchError("timeout", "no extraction slot within the timeout", status, url)
            try:
                self._remaining(deadline)
                opts, pdf = self.opts, self.pdf
                assert pdf is not None
                got = extract_pdf(
                    body, opts.mode, links=opts.links, metadata=opts.metadata, final_url=url,
                    max_pages=pdf.max_pages, max_links=self.cfg.max_links, deadline=deadline,
                    max_inflated=pdf.max_inflated_bytes,
                )  # fmt: skip
            finally:
                EXTRACT_GATE.release()
        finally:
            PDFIUM_LOCK.release()
        if got.error:
            return Outcome(False, status, url, ctype, "", *(status_err or got.error))
        self._remaining(deadline)  # as for a page: a result finished after the deadline is `timeout`
        if over := self._text_over_cap(got.text):
            return Outcome(False, status, url, ctype, "", "too_large", over)
        fields = got.fields()
        if status_err:
            fields["message"] = status_err[1]
            return Outcome(False, status, url, ctype, got.text, status_err[0], **fields)
        return Outcome(True, status, url, ctype, got.text, **fields)

    def _extract(
        self, body: bytes | bytearray, http_charset: str | None, kind: str, url: str
    ) -> tuple[str, tuple[str, str] | None, dict[str, Any]]:
        """``(text, (code, message) of a failure or None, metadata and links of an HTML page or {})``."""
        opts = self.opts
        page: dict[str, Any] = {}
        try:
            if kind == "html":
                # The bytes go to the parser as they are (no str copy, no re-encoding) when they are UTF-8.
                enc, skip = charset.choose(body, http_charset)
                text, root = html_text(body, opts.mode, url, self.cfg.noscript, encoding=enc, skip=skip)
                page = page_fields(root, url, opts.metadata, opts.links, self.cfg.max_links)
            else:
                text, _enc = charset.decode(body, http_charset, markup=kind != "text")
                if kind == "xml":
                    text = xml_to_text(text)
        except (ValueError, LookupError) as e:
            return "", ("decode_error", f"cannot decode or parse the body: {e}"), {}
        return text, None, page
