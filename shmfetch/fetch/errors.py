"""A fetch's failures in words for people: what failed, where, after how long.

``FetchError`` carries a protocol error code. A timeout names its phase (``Timeout``: DNS, connect,
response, body, decoding, extraction...), and the Fetcher words it with the host and the request's timeout:
``no response from 127.0.0.1:18499 within 10 s``. ``classify`` turns what requests, urllib3, ssl and
http.client raise into a code and such a message: no class names, no wrapper reprs, no float noise
(docs/FETCH.md, "Error messages").
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
import urllib.parse

import requests
import urllib3

from .netpolicy import BlockedAddress, DnsError

# How each phase of a fetch words a timeout; {host} is the host, {where} host:port, {s} the timeout.
PHASES = {
    "dns": "DNS lookup of {host} did not finish within {s}",
    "connect": "could not connect to {where} within {s}",
    "response": "no response from {where} within {s}",
    "body": "the body from {where} did not arrive within {s}",
    "decode": "decoding the body from {where} did not finish within {s}",
    "extract_wait": "no extraction slot was free for the page from {where} within {s}",
    "extract": "extracting the page from {where} did not finish within {s}",
    "retry": "no time was left to retry {where} within {s}",
    "fetch": "the fetch of {where} did not finish within {s}",
}


class FetchError(Exception):
    """A failure with its stable error code; turned into an Outcome at the top of Fetcher.fetch."""

    def __init__(self, code: str, message: str, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.url = url


class Timeout(FetchError):
    """The deadline passed during ``phase`` (a key of PHASES); the Fetcher words the message."""

    def __init__(self, phase: str, status: int | None = None, url: str | None = None):
        super().__init__("timeout", PHASES[phase], status, url)
        self.phase = phase


def remaining(deadline: float, phase: str) -> float:
    """Seconds left before ``deadline`` (time.monotonic); ``Timeout(phase)`` if none are left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout(phase)
    return left


def host_port(host: str, port: int) -> str:
    """``127.0.0.1:80``, ``[::1]:80``: an address and port as people write them."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def authority(url: str | None) -> tuple[str, str]:
    """``(host, host:port)`` of ``url`` for messages; ``("?", "?")`` if it has none."""
    try:
        u = urllib.parse.urlsplit(url or "")
        host = u.hostname or "?"
        return host, host_port(host, u.port or (443 if u.scheme.lower() == "https" else 80))
    except ValueError:
        return "?", "?"


def seconds(t: float) -> str:
    """``10 s``, ``2.5 s``: a configured duration without float noise."""
    return f"{round(t, 3):g} s"


def timeout_message(phase: str, url: str | None, timeout: float) -> str:
    host, where = authority(url)
    return PHASES.get(phase, PHASES["fetch"]).format(host=host, where=where, s=seconds(timeout))


def _causes(e: BaseException) -> list[BaseException]:
    """``e`` and the exceptions wrapped in it (requests and urllib3 nest them in args and ``reason``)."""
    seen: list[BaseException] = []
    todo = [e]
    while todo and len(seen) < 12:
        cur = todo.pop(0)
        if any(cur is s for s in seen):
            continue
        seen.append(cur)
        inner = [getattr(cur, "reason", None), cur.__cause__, cur.__context__, *getattr(cur, "args", ())]
        todo.extend(x for x in inner if isinstance(x, BaseException))
    return seen


def _find(e: BaseException, kind: type | tuple[type, ...]) -> BaseException | None:
    return next((c for c in _causes(e) if isinstance(c, kind)), None)


_SSL_NOISE = re.compile(r"^\[[A-Z_]+: [A-Z_0-9]+\] | \(_ssl\.c:\d+\)$")


def _tls_reason(e: BaseException) -> str:
    verify = _find(e, ssl.SSLCertVerificationError)
    if verify is not None:
        return f"certificate verify failed: {verify.verify_message}"  # type: ignore[attr-defined]
    err = _find(e, ssl.SSLError)
    text = str(err.args[1] if err is not None and len(err.args) > 1 else err or e)
    return _SSL_NOISE.sub("", text) or "handshake failed"


def _connection_reason(e: BaseException, where: str) -> str:
    """What happened to the connection, in words: ``127.0.0.1:80 reset the connection``."""
    new_conn = _find(e, urllib3.exceptions.NewConnectionError)
    if new_conn is not None:
        return new_conn._message  # type: ignore[attr-defined]  # transport words it: "connection refused: ..."
    incomplete = _find(e, (http.client.IncompleteRead, urllib3.exceptions.IncompleteRead))
    if incomplete is not None:
        got = incomplete.partial if isinstance(incomplete.partial, int) else len(incomplete.partial)  # type: ignore[attr-defined]
        whole = got + (incomplete.expected or 0)  # type: ignore[attr-defined]
        return f"{where} closed the connection after {got} of {whole} body bytes"
    words = (
        (http.client.RemoteDisconnected, "closed the connection without a response"),
        (ConnectionResetError, "reset the connection"),
        (BrokenPipeError, "closed the connection"),
        (ConnectionRefusedError, "refused the connection"),
        (http.client.BadStatusLine, "did not answer in HTTP"),
        (http.client.LineTooLong, "sent a header line that is too long"),
        (urllib3.exceptions.InvalidChunkLength, "sent a malformed chunked body"),
        (urllib3.exceptions.InvalidHeader, "sent a malformed header"),
        (http.client.HTTPException, "sent a malformed response"),
    )
    for kind, what in words:
        if _find(e, kind) is not None:
            return f"{where} {what}"
    inner = _causes(e)[-1]
    detail = getattr(inner, "strerror", None) or str(inner)
    return f"the connection to {where} failed: {detail}"


def classify(e: BaseException, url: str | None, timed_out: bool) -> tuple[str, str]:
    """``(code, message)`` for an exception of the download; ``timed_out``: the deadline has passed.
    A ``timeout`` comes back without a message: the caller words it for its phase."""
    _, where = authority(url)
    if isinstance(e, (BlockedAddress, DnsError)):
        return ("blocked_address" if isinstance(e, BlockedAddress) else "dns_error"), str(e)
    if timed_out or isinstance(e, (requests.Timeout, TimeoutError, urllib3.exceptions.TimeoutError)):
        return "timeout", ""
    if isinstance(e, requests.exceptions.SSLError):
        return "tls_error", f"TLS with {where} failed: {_tls_reason(e)}"
    if isinstance(e, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return "invalid_url", f"the URL cannot be requested: {_causes(e)[-1]}"
    if isinstance(e, requests.exceptions.InvalidSchema):
        return "unsupported_scheme", "only http and https URLs are fetched"
    connection_kinds = (
        requests.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.HTTPError,
        ConnectionError,
        http.client.HTTPException,
    )
    if isinstance(e, connection_kinds):
        return "connect_error", _connection_reason(e, where)
    return "internal_error", f"the fetch failed unexpectedly: {e}"
