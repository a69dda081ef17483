"""Wire formats: client frames on the Unix socket, messages on the rings, and the error codes.

Client protocol. Each frame is a 4-byte big-endian length followed by that many bytes of msgpack holding
one map. A client may pipeline any number of requests; responses carry the request's ``id`` and may arrive
in any order.

    request   {"id": int, "url": str[, "options": map]}  -> one result map (fields of ``Result``);
                                                            options: shmfetch/options.py
              {"id": int, "op": "crawl", "seeds": [str, ...][, "crawl": map][, "options": map]}
                                                         -> one result map per page the crawl requests,
                                                            each with ``crawl_depth`` and ``referrer``,
                                                            then {"id": ..., "ok": true, "summary": map}
                                                            (``CrawlSummary``); crawl rules: docs/CRAWL.md
              {"id": int, "op": "stats"}                 -> {"id": ..., "ok": true, "stats": {...}}
              {"id": int, "op": "await_exit"}            -> {"id": ..., "ok": true, "downloaded": N},
                                                            sent only when the daemon stops
    error     {"id": int | None, "ok": false, "error": code, "message": str}

Ring messages are msgpack arrays, specified in docs/RING.md ("Messages on the rings").
"""

from __future__ import annotations

import operator
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import msgpack

FRAME_HDR = struct.Struct(">I")

# Stable error codes: clients may branch on them. The README lists them with their meaning.
ERRORS: dict[str, str] = {
    "invalid_url": "the URL could not be parsed or has no host",
    "unsupported_scheme": "only http and https URLs are fetched",
    "blocked_address": "the host resolves to an address the security policy denies",
    "dns_error": "the host name could not be resolved",
    "connect_error": "the connection was refused, reset or failed",
    "tls_error": "the TLS handshake or certificate check failed",
    "timeout": "the fetch did not finish within [fetch] timeout",
    "too_large": "the body or its text is larger than the configured cap",
    "too_many_redirects": "more than [fetch] max_redirects redirects",
    "http_status": "the server answered with a non-2xx status (the text is still returned)",
    "unsupported_content_type": "the content type is not HTML, XHTML, XML, plain text or PDF",
    "decode_error": "the body could not be decoded or parsed",
    "worker_crashed": "the worker died while fetching, twice",
    "overloaded": "the daemon's queue is full ([daemon] max_pending); retry later",
    "shutting_down": "the daemon is stopping and did not finish this request",
    "bad_request": "the frame is not a valid request",
    "frame_too_large": "the frame is larger than [daemon] max_frame_bytes",
    "internal_error": "an unexpected error in the worker; see the daemon's log",
    "robots_denied": "robots.txt of the host disallows this URL for [robots] user_agent; nothing was fetched",
    "not_modified": "the server answered 304 Not Modified to a request the master did not make conditional",
}


@dataclass
class Outcome:
    """What the worker found for one URL: the result fields the worker fills.

    This class and ``Result`` below are the one definition of the result schema. Everything else derives
    from them: the result ring message is ``[ticket, *OUTCOME_FIELDS values]`` (``pack_result``), the
    master turns it into a client frame by name (``result_frame``), and ``Result`` is what the clients,
    the JSON Lines output and the HTTP API present. Adding a result field is one line here (with a
    default, so older records and error frames still make a whole result); the fetcher fills it.
    """

    ok: bool
    status: int | None = None
    final_url: str | None = None
    content_type: str | None = None
    text: str = ""
    error: str | None = None
    message: str | None = None
    # What the page declares about itself (shmfetch/extract/pagemeta.py): HTML pages only, null when absent.
    title: str | None = None
    lang: str | None = None
    canonical_url: str | None = None
    description: str | None = None
    site_name: str | None = None
    published: str | None = None  # YYYY-MM-DD, with metadata=true (request or [fetch] metadata)
    links: list[dict[str, Any]] | None = None  # [{"url": str, "internal": bool}], with links=true
    links_truncated: bool | None = None  # with links=true: more than [fetch] max_links links
    truncated: bool = False  # a PDF of more than [pdf] max_pages pages: the text of the first ones only
    # The response's caching and politeness headers, for the master's HTTP cache and per-host gate
    # (frontier/admission.py; docs/FETCH.md, "What the worker reports for the master"); None when absent.
    # compare=False: they describe the transfer, not what was fetched.
    etag: str | None = field(default=None, compare=False)
    last_modified: str | None = field(default=None, compare=False)
    cache_control: str | None = field(default=None, compare=False)
    expires: str | None = field(default=None, compare=False)
    date: str | None = field(default=None, compare=False)
    retry_after: float | None = field(default=None, compare=False)  # seconds, from Retry-After
    body_bytes: int = field(default=0, compare=False)  # bytes received for the last response's body
    retries: int = field(default=0, compare=False)  # retries the fetcher made (transient errors, 429/503)
    # time.monotonic() in the worker (CLOCK_MONOTONIC: one clock for every process) by which the last
    # request of the fetch had surely reached the origin (its response headers had arrived); None if none
    answered_at: float | None = field(default=None, compare=False)


# The page fields of an Outcome (what a page declares about itself; shmfetch/extract/pagemeta.py fills them).
METADATA_FIELDS = ("title", "lang", "canonical_url", "description", "site_name", "published")
# What the master's HTTP cache keeps beside the text, so that a hit answers them too (frontier/admission.py).
CACHED_FIELDS = (*METADATA_FIELDS, "truncated")


@dataclass
class Result(Outcome):
    """One fetched URL, as the CLI's JSON Lines, the HTTP API and the Python clients present it: the
    worker's ``Outcome`` plus the fields the master adds."""

    url: str = ""
    worker: int | None = None  # the worker slot that fetched it
    elapsed_ms: float | None = None  # from the master taking the request to the answer
    cached: bool = False  # answered from the HTTP cache ([cache] path) without a fetch, or after a 304
    crawl_depth: int | None = None  # a crawl's page: link hops from its seed (seeds and sitemap URLs: 0)
    referrer: str | None = None  # a crawl's page: the URL whose page linked to it (null for seeds)

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Result:
        return cls(**{k: v for k, v in frame.items() if k in _RESULT_NAMES})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CrawlSummary:
    """The last answer of a crawl (``{"id", "ok": true, "summary": {these fields}}``): what it did.

    Every page the crawl requested gave one result (``ok`` + ``failed``); a link that was not requested
    is counted under the first reason it met, in this order: ``out_of_scope`` (or not http(s)),
    ``not_page`` (an extension of ``[crawl] non_page_extensions``), ``excluded`` (include/exclude),
    ``duplicates`` (its normalized URL was seen), and ``robots_denied`` (robots.txt, no result line).
    ``sitemaps``: sitemap documents read.
    ``limit`` is what ended it early: ``max_pages``, ``depth`` (links were left beyond it),
    ``shutting_down``, or null when the crawl ran out of links."""

    ok: int = 0
    failed: int = 0
    robots_denied: int = 0
    out_of_scope: int = 0
    not_page: int = 0
    excluded: int = 0
    duplicates: int = 0
    sitemaps: int = 0  # sitemap documents read (with ``sitemaps``: robots.txt's Sitemap: lines, /sitemap.xml)
    limit: str | None = None
    elapsed_s: float = 0.0

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> CrawlSummary:
        return cls(**{k: v for k, v in frame["summary"].items() if k in _SUMMARY_NAMES})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SUMMARY_NAMES = frozenset(f.name for f in fields(CrawlSummary))
OUTCOME_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Outcome))
RESULT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Result))
_RESULT_NAMES = frozenset(RESULT_FIELDS)
# Every Result field's default except ok's (it has none) and url's (always given): the master's own answers.
_RESULT_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Result) if f.name not in ("ok", "url")}


class FrameError(ValueError):
    """The peer broke the framing; ``code`` is the error code to answer with before closing."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def encode_frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return FRAME_HDR.pack(len(body)) + body


def decode_frame_body(body: bytes) -> Any:
    """One frame's msgpack body; garbage raises ``FrameError("bad_request")``."""
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise FrameError("bad_request", f"malformed msgpack: {type(e).__name__}") from None


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive and get back the complete frames."""

    def __init__(self, max_frame_bytes: int):
        self.max = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = FRAME_HDR.unpack_from(buf, pos)
            if n > self.max:
                raise FrameError("frame_too_large", f"frame of {n} bytes exceeds max_frame_bytes={self.max}")
            if len(buf) - pos - 4 < n:
                break
            raw = bytes(buf[pos + 4 : pos + 4 + n])
            pos += 4 + n
            try:
                out.append(decode_frame_body(raw))
            except FrameError:
                del buf[:pos]
                raise
        del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


def error_frame(req_id: Any, code: str, message: str | None = None, url: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "id": req_id,
        "ok": False,
        "error": code,
        "message": message or ERRORS.get(code, code),
    }
    if url is not None:  # an answer to a fetch request: a whole result, every field present
        frame = master_frame(req_id, url, **frame)
    return frame


def master_frame(req_id: Any, url: str, **values: Any) -> dict[str, Any]:
    """A whole result frame for an answer the master makes itself (an error, a cache hit): ``values`` over
    the defaults of every ``Result`` field."""
    return {**_RESULT_DEFAULTS, **values, "id": req_id, "url": url}


# -- ring messages ------------------------------------------------------------------------------------

_packer = msgpack.Packer(use_bin_type=True)

# Request options the master may send with a URL (the third element of the request message, docs/RING.md).
OPT_IF_NONE_MATCH = "if_none_match"  # revalidate a cached entry: If-None-Match
OPT_IF_MODIFIED_SINCE = "if_modified_since"  # and/or If-Modified-Since
# A crawl's sitemap fetch (shmfetch/crawl): "robots" reads a robots.txt's Sitemap: lines, "xml" a sitemap
# or sitemap index (gzipped or not); the URLs come back as ``links`` (a sitemap's own: ``"sitemap": true``).
OPT_SITEMAP = "sitemap"
PAUSE_CODES = frozenset((429, 503))  # a daemon worker answers these at once; the master pauses the host


def pack_request(ticket: int, url: str, options: dict[str, Any] | None = None) -> bytes:
    return _packer.pack([ticket, url, options])


def unpack(buf: Any) -> Any:
    return msgpack.unpackb(buf, raw=False, strict_map_key=False)


_outcome_values = operator.attrgetter(*OUTCOME_FIELDS)


def pack_result(ticket: int, out: Outcome) -> bytes:
    """The result ring message for ``out``: ``[ticket, *values in OUTCOME_FIELDS order]``."""
    # A fresh Packer per call: the worker packs from several threads, and Packer is not thread-safe.
    return msgpack.packb([ticket, *_outcome_values(out)])


def result_frame(req_id: Any, url: str, worker: int, elapsed_ms: float, record: list[Any]) -> dict[str, Any]:
    """The client frame (the fields of ``Result`` plus ``id``) for one result ring ``record``.

    The values are passed through as they are: the master reads records with ``raw=True``, so strings stay
    UTF-8 bytes and reach the client without being decoded and encoded again (dispatch/collector.py, job.py).
    """
    frame = dict(zip(OUTCOME_FIELDS, record[1:], strict=False))
    frame["id"] = req_id
    frame["url"] = url
    frame["worker"] = worker
    frame["elapsed_ms"] = elapsed_ms
    frame["cached"] = False
    frame["crawl_depth"] = frame["referrer"] = None  # a crawl sets them (shmfetch/crawl)
    return frame
