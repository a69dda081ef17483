"""Download one URL with requests under a strict policy, and hand the final response to a finish step
(docs/FETCH.md).

* One total deadline per fetch (``[fetch] timeout``) covers DNS, connect, every redirect hop, retries and
  the body. Each socket operation gets the *remaining* time as its timeout, the body is read with
  ``read1`` so a drip feed returns control after every packet (body.py), and a watchdog thread shuts the
  socket down at the deadline so that nothing can hold a fetch longer (transport.py).
* Redirects are followed by hand so that each hop is checked against the URL rules and the SSRF policy.
* SSRF: we resolve the host ourselves, vet every address, and the connection class connects only to those
  vetted addresses (transport.py), while Host, SNI and certificate checks keep the name.
* Caps: ``max_bytes`` on the bytes received, ``max_decoded_bytes`` after decompression (body.py and
  content.py, incrementally, so a bomb stops at the cap); the page step caps the text.

What a page becomes is not decided here: ``Fetcher.fetch`` hands the final response to the ``page`` step it
was built with (shmfetch.extract.page builds the worker's: ``page_fetcher``). ``fetch_raw`` reads a body
prefix without extraction (robots.txt). Neither raises: every failure is an ``Outcome`` with one of the
codes in protocol.ERRORS (only ``fetch`` on a Fetcher built without a page step is refused, TypeError: a
programming error, not a failure of the fetch).
"""

from __future__ import annotations

import http.cookiejar
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import requests
import urllib3

from ..config import FetchConfig, SecurityConfig
from ..options import Options, effective
from ..protocol import PAUSE_CODES, Outcome
from .body import Body
from .content import ContentError, http_date
from .errors import FetchError, Timeout, classify, remaining, timeout_message
from .netpolicy import NetPolicy, resolve, vet
from .transport import Ctx, PinnedAdapter, arm_watchdog, pin_host

log = logging.getLogger("shmfetch.fetch")

REDIRECT_CODES = frozenset((301, 302, 303, 307, 308))
RETRY_CODES = frozenset((429, 502, 503, 504))
BACKOFF_BASE = 0.1  # seconds; doubled per attempt, always cut to the remaining deadline

# What turns a final (non-redirect, not retried) response into an Outcome: the response, the URL it came
# from, its body reader, and the request's options.
PageStep = Callable[[requests.Response, str, Body, Options], Outcome]
# Internal: a step with the deadline instead of the body reader (fetch and fetch_raw build one each).
_Finish = Callable[[requests.Response, str, float], Outcome]

__all__ = ["Body", "FetchError", "Fetcher", "Outcome", "PageStep", "check_url"]


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
        raise FetchError("invalid_url", "URL has port 0")
    try:
        u.hostname.encode("idna")
    except UnicodeError as e:
        raise FetchError("invalid_url", f"bad host name {u.hostname!r}: {_idna_reason(e)}") from None
    return u


def _idna_reason(e: UnicodeError) -> str:
    """``label too long`` out of ``encoding with 'idna' codec failed (UnicodeError: label too long)``."""
    m = re.search(r"\((?:\w+: )?(.*)\)$", str(e))
    return m.group(1) if m else str(e)


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


class _Hops:
    """Where a fetch's redirect/retry loop is: the URL of this hop, the retries made, the redirects taken."""

    def __init__(self, url: str):
        self.url = url
        self.attempt = 0  # retries made so far; at most cfg.retries
        self.redirects = 0


class Fetcher:
    """Fetches URLs for one thread: owns one requests.Session, so keep-alive connections are reused.

    ``answer_pauses``: answer 429 and 503 at once instead of retrying them here (the daemon's workers, whose
    master pauses the host for every worker and retries; and robots.txt fetches).
    ``page``: the step that turns a final response into an Outcome (``fetch``); without one, only
    ``fetch_raw`` serves. shmfetch.extract.page.page_fetcher builds a Fetcher with the extraction step.
    """

    def __init__(
        self,
        cfg: FetchConfig,
        security: SecurityConfig,
        answer_pauses: bool = False,
        page: PageStep | None = None,
    ):
        self.cfg = cfg
        self.security = security
        self.page = page
        self.policy = NetPolicy(security.allow_networks, security.deny_networks)
        self._ctx = Ctx()
        self.session = self._session(cfg)
        self.defaults = effective(None, cfg)
        # With answer_pauses a 429/503 is answered at once, for the caller to pause the host and retry (the
        # daemon's master, for every worker) or to treat as unreachable (robots.txt); the other gateway
        # errors (502, 504) are still retried here.
        self._retry_codes = RETRY_CODES - PAUSE_CODES if answer_pauses else RETRY_CODES

    def _session(self, cfg: FetchConfig) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # no proxies or netrc from the environment: they bypass the policy
        # No cookie jar: one thread's Session serves every client in turn, and a cookie one client's page
        # set must never be sent on another client's fetch. (Within a fetch, redirect hops send none
        # either: a browser-like login flow is not what a text fetcher is for.)
        session.cookies.set_policy(_NO_COOKIES)
        session.headers["User-Agent"] = cfg.user_agent
        session.headers["Accept-Encoding"] = "gzip, deflate, br"
        session.headers["Accept"] = (
            "text/html,application/xhtml+xml,application/xml;q=0.9,text/plain;q=0.8,*/*;q=0.1"
        )
        if getattr(cfg, "ca_bundle", ""):
            session.verify = cfg.ca_bundle
        adapter = PinnedAdapter(self._ctx)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        self.session.close()

    # The public entry points: everything below may raise; in _run it becomes an Outcome.
    def fetch(self, url: str, opts: Options | None = None) -> Outcome:
        """Fetch ``url`` with the request's options (shmfetch.options.effective), else the config's, and
        turn the final response into an Outcome with the Fetcher's ``page`` step."""
        if self.page is None:
            raise TypeError("this Fetcher has no page step: build it with shmfetch.extract.page.page_fetcher")
        page = self.page
        opts = opts or self.defaults

        def finish(r: requests.Response, final: str, deadline: float) -> Outcome:
            return self._finish(r, final, Body(r, deadline, self.cfg, opts.max_bytes), opts, page)

        return self._run(url, opts, finish)

    def fetch_raw(self, url: str, limit: int) -> Outcome:
        """The body of ``url`` as text (UTF-8, errors replaced), its first ``limit`` bytes only, not
        extracted: for robots.txt (RFC 9309 parses a prefix of an oversized file). Same policy otherwise."""

        def finish(r: requests.Response, final: str, deadline: float) -> Outcome:
            body = Body(r, deadline, self.cfg, self.cfg.max_bytes).read_prefix(limit)
            return Outcome(
                200 <= r.status_code < 300, r.status_code, final, None, body.decode("utf-8", "replace")
            )

        return self._run(url, self.defaults, finish)

    def _run(self, url: str, opts: Options, finish: _Finish) -> Outcome:
        """One fetch under its deadline and watchdog, ``finish`` reading the final response."""
        deadline = time.monotonic() + opts.timeout
        arm_watchdog(self._ctx, deadline)
        state: dict[str, Any] = {
            "url": url if isinstance(url, str) else None, "status": None, "retries": 0, "phase": "fetch"
        }  # fmt: skip
        try:
            out = self._fetch(url, deadline, state, opts, finish)
            out.retries = state["retries"]
        except Exception as e:
            out = self._failure(e, state, opts.timeout, deadline)
        finally:
            self._ctx.done()
        out.answered_at = state.get("answered_at")
        return out

    @staticmethod
    def _failure(e: Exception, state: dict[str, Any], timeout: float, deadline: float) -> Outcome:
        """The Outcome of a fetch that raised ``e`` while in ``state``; a timeout is worded for its phase,
        with the host and the request's timeout."""
        status, url, phase = state["status"], state["url"], state["phase"]
        if isinstance(e, FetchError):
            code, msg = e.code, str(e)
            status, url, phase = e.status or status, e.url or url, getattr(e, "phase", phase)
        elif isinstance(e, ContentError):
            code, msg, phase = e.code, str(e), "decode"
        else:
            code, msg = classify(e, url, time.monotonic() >= deadline)
            if isinstance(e, requests.exceptions.ConnectTimeout):
                phase = "connect"
            if code == "internal_error":
                log.exception("unexpected error fetching %s", url)
        if code == "timeout":
            if phase == "body" and state.get("answered_at", 0.0) >= deadline:
                phase = "response"  # the watchdog cut a header drip: what "arrived" was cut short
            msg = timeout_message(phase, url, timeout)
        return Outcome(False, status, url, None, "", code, msg)

    def _pin(self, u: urllib.parse.SplitResult, deadline: float) -> None:
        """Resolve and vet the host of ``u``; the connection classes connect only to what we pin here."""
        host = pin_host(u.hostname or "")
        port = u.port or (443 if u.scheme.lower() == "https" else 80)
        key = (host, port)
        if key in self._ctx.pins:
            return
        try:
            addrs = resolve(host, port, remaining(deadline, "dns"))
        except TimeoutError:
            raise Timeout("dns") from None
        vet(self.policy, addrs)
        self._ctx.pins[key] = addrs

    def _fetch(self, url: str, deadline: float, state: dict[str, Any], opts: Options, finish: _Finish) -> Outcome:
        """The redirect/retry loop: one request per pass until a response is final."""
        check_url(url)
        conditional = _conditional_headers(opts)
        hops = _Hops(url)
        while True:
            state["url"] = hops.url
            state["retries"] = hops.attempt
            state["phase"] = "response"
            try:
                r = self._send(hops, conditional, opts, deadline)
                state["answered_at"] = time.monotonic()
            except (requests.ConnectionError, urllib3.exceptions.ProtocolError) as e:
                if isinstance(e, (requests.exceptions.SSLError, requests.Timeout)):
                    raise
                self._retry_after_error(hops, e, deadline)
                continue
            try:
                state["status"] = r.status_code
                state["phase"] = "body"
                out = self._answer(r, hops, deadline, finish)
            finally:
                r.close()
            if out is not None:
                return out

    def _send(
        self, hops: _Hops, conditional: dict[str, str] | None, opts: Options, deadline: float
    ) -> requests.Response:
        """One request for ``hops.url``, to a pinned address, its headers read within the deadline."""
        # Validators go only to the URL they belong to, not to a redirect target.
        headers = dict(conditional) if conditional and hops.redirects == 0 else {}
        if opts.accept_language:
            headers["Accept-Language"] = opts.accept_language
        prep = self.session.prepare_request(requests.Request("GET", hops.url, headers=headers))
        # Pin the host exactly as urllib3 will see it (IDNA-encoded by requests, trailing dot dropped).
        self._pin(urllib.parse.urlsplit(prep.url), deadline)
        left = remaining(deadline, "response")
        return self.session.send(prep, timeout=(left, left), stream=True, allow_redirects=False)

    def _answer(self, r: requests.Response, hops: _Hops, deadline: float, finish: _Finish) -> Outcome | None:
        """The Outcome of a final response; None after moving ``hops`` on to a redirect or a retry."""
        if r.status_code in REDIRECT_CODES and r.headers.get("Location"):
            hops.url = self._redirect(r, hops)
            return None
        if r.status_code in self._retry_codes and hops.attempt < self.cfg.retries:
            wait = _retry_after(r.headers.get("Retry-After"), time.time())
            if self._can_retry(hops.attempt + 1, wait, deadline):
                hops.attempt += 1
                self._backoff(hops.attempt, wait, deadline, None)
                return None
        try:
            return finish(r, hops.url, deadline)
        except (requests.ConnectionError, urllib3.exceptions.ProtocolError,
                requests.exceptions.ChunkedEncodingError) as e:  # fmt: skip
            # Reset in the middle of the body: a GET is safe to repeat.
            if time.monotonic() >= deadline:
                raise
            self._retry_after_error(hops, e, deadline)
            return None

    def _redirect(self, r: requests.Response, hops: _Hops) -> str:
        """The checked URL a redirect response points to."""
        hops.redirects += 1
        if hops.redirects > self.cfg.max_redirects:
            raise FetchError(
                "too_many_redirects",
                f"more than max_redirects={self.cfg.max_redirects} redirects",
                r.status_code,
                hops.url,
            )
        try:
            url = urllib.parse.urljoin(hops.url, r.headers["Location"])
        except ValueError as e:
            raise FetchError("invalid_url", f"bad redirect Location: {e}", r.status_code) from None
        check_url(url)
        return url

    def _retry_after_error(self, hops: _Hops, e: Exception, deadline: float) -> None:
        """Count a retry after a connection error and wait its backoff; re-raise ``e`` if none is left."""
        if hops.attempt >= self.cfg.retries:
            raise e
        hops.attempt += 1
        self._backoff(hops.attempt, None, deadline, e)

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
            raise Timeout("retry")
        time.sleep(delay)

    @staticmethod
    def _finish(r: requests.Response, url: str, body: Body, opts: Options, page: PageStep) -> Outcome:
        """The page step's Outcome with the response's header fields; a 304 is answered without a body."""
        if r.status_code == 304:
            out = Outcome(False, 304, url, None, "", "not_modified", "304 Not Modified")
        else:
            out = page(r, url, body, opts)
        h = r.headers
        out.etag = h.get("ETag")
        out.last_modified = h.get("Last-Modified")
        out.cache_control = h.get("Cache-Control")
        out.expires = h.get("Expires")
        out.date = h.get("Date")
        out.retry_after = _retry_after(h.get("Retry-After"), time.time())
        out.body_bytes = body.received
        return out
