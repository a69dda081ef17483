"""Wire formats: client frames on the Unix socket, messages on the rings, and the error codes.

Client protocol. Each frame is a 4-byte big-endian length followed by that many bytes of msgpack holding
one map. A client may pipeline any number of requests; responses carry the request's ``id`` and may arrive
in any order.

    request   {"id": int, "url": str}                    -> one result map (fields of ``Result``)
              {"id": int, "op": "stats"}                 -> {"id": ..., "ok": true, "stats": {...}}
              {"id": int, "op": "await_exit"}            -> {"id": ..., "ok": true, "downloaded": N},
                                                            sent only when the daemon stops
    error     {"id": int | None, "ok": false, "error": code, "message": str}

Ring messages are msgpack arrays, specified in docs/RING.md ("Messages on the rings").
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, fields
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
    "unsupported_content_type": "the content type is not HTML, XHTML, XML or plain text",
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

RESULT_FIELDS = (
    "url",
    "ok",
    "status",
    "final_url",
    "content_type",
    "text",
    "error",
    "message",
    "worker",
    "elapsed_ms",
    "cached",
)


@dataclass
class Result:
    """One fetched URL, as the CLI's JSON Lines and the Python client present it."""

    url: str
    ok: bool
    status: int | None = None
    final_url: str | None = None
    content_type: str | None = None
    text: str = ""
    error: str | None = None
    message: str | None = None
    worker: int | None = None
    elapsed_ms: float | None = None
    cached: bool = False  # answered from the HTTP cache ([cache] path) without a fetch, or after a 304

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Result:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in frame.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    if url is not None:
        frame.update(url=url, status=None, final_url=None, content_type=None, text="", worker=None)
    return frame


# -- ring messages ------------------------------------------------------------------------------------

_packer = msgpack.Packer(use_bin_type=True)


def pack_request(ticket: int, url: str, options: dict[str, Any] | None = None) -> bytes:
    return _packer.pack([ticket, url, options])


def unpack(buf: Any) -> Any:
    return msgpack.unpackb(buf, raw=False, strict_map_key=False)


# Fields of fetch.Outcome after ``message`` that the worker reports for the master's cache and politeness
# gate (docs/RING.md, result message); the master does not forward them to clients.
HTTP_META_FIELDS = (
    "etag",
    "last_modified",
    "cache_control",
    "expires",
    "date",
    "retry_after",
    "body_bytes",
    "retries",
    "answered_at",
)


def pack_result(ticket: int, out: Any, fetch_ms: float) -> bytes:
    """The result message for a fetch.Outcome: its client fields, ``fetch_ms``, then HTTP_META_FIELDS."""
    # A fresh Packer per call: the worker packs from several threads, and Packer is not thread-safe.
    return msgpack.packb(
        [ticket, out.ok, out.status, out.final_url, out.content_type, out.text, out.error, out.message,
         fetch_ms, *(getattr(out, k) for k in HTTP_META_FIELDS)]
    )  # fmt: skip
