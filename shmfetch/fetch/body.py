"""Reading one response's body: in chunks under the deadline, within the byte caps, decoded as it arrives.

``Body`` wraps a streamed ``requests.Response``. ``media_type`` names what the body is (its Content-Type,
or a sniff of its decoded head when it has none); ``read`` returns the whole decoded body under
``max_bytes`` received and ``max_decoded_bytes`` decoded; ``read_prefix`` returns at most a number of
decoded bytes and leaves the rest unread (robots.txt). Every read waits at most until the deadline; an
EOF the watchdog made by cutting the socket at the deadline is a ``timeout``, not the body's end.
"""

from __future__ import annotations

import time

import requests

from ..config import FetchConfig
from .content import GENERIC_TYPES, PDF_MAGIC, Decoder, content_codings, sniff
from .errors import FetchError, Timeout, remaining

CHUNK = 64 * 1024
SNIFF_BYTES = 1024


class Body:
    """The body of ``r``, read at most until ``deadline`` and within ``cfg``'s caps (``max_bytes`` may be
    lowered per request)."""

    def __init__(self, r: requests.Response, deadline: float, cfg: FetchConfig, max_bytes: int):
        self.r = r
        self.deadline = deadline
        self.cfg = cfg
        self.max_bytes = max_bytes
        self.received = 0  # bytes of the body received so far, still encoded (Outcome.body_bytes)
        self._first = b""  # a chunk read for sniffing, not yet consumed by read()
        self._codings = content_codings(r.headers.get("Content-Encoding", ""))

    def remaining(self, phase: str = "body") -> float:
        """Seconds left before the deadline; ``Timeout(phase)`` if none are left."""
        return remaining(self.deadline, phase)

    def media_type(self, pdf: bool = False) -> str:
        """The bare media type of the body: its Content-Type, else sniffed from its decoded head. With
        ``pdf``, a body under a generic type (``application/octet-stream``...) that starts with ``%PDF-``
        is ``application/pdf``."""
        ctype = self.r.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype and not (pdf and ctype in GENERIC_TYPES):
            return ctype
        head = self._head()
        if ctype:
            return "application/pdf" if head.startswith(PDF_MAGIC) else ctype
        return sniff(bytes(head[:SNIFF_BYTES])) if self._first else "text/plain"

    def _head(self) -> bytes | bytearray:
        """The decoded start of the body (up to SNIFF_BYTES), keeping the raw chunk for ``read``."""
        self._first = self.next_chunk()
        head = self._first
        if self._codings and head:
            head = bytearray()
            Decoder(self._codings, SNIFF_BYTES, truncate=True, deadline=self.deadline).feed_into(self._first, head)
        return head

    def read(self) -> bytearray:
        """The decoded body, within the deadline and the byte caps."""
        max_decoded = self.cfg.max_decoded_bytes
        decoder = Decoder(self._codings, max_decoded, deadline=self.deadline) if self._codings else None
        out = bytearray()
        chunk, self._first = self._first, b""
        while True:
            if chunk:
                self.received += len(chunk)
                if self.received > self.max_bytes:
                    raise FetchError("too_large", f"body exceeds max_bytes={self.max_bytes}", self.r.status_code)
                if decoder is not None:
                    decoder.feed_into(chunk, out)
                elif self.received > max_decoded:
                    raise FetchError(
                        "too_large", f"body exceeds max_decoded_bytes={max_decoded}", self.r.status_code
                    )
                else:
                    out += chunk
            chunk = self.next_chunk()
            if not chunk:
                break
        if decoder is not None:
            decoder.feed_into(b"", out)
        return out  # a bytearray: bytes(out) would hold the body twice at the worker's peak

    def read_prefix(self, limit: int) -> bytes:
        """At most ``limit`` decoded bytes of the body; the rest is not read. Decoded by ``Decoder`` as a
        page is, so a compressed bomb costs ``limit`` bytes here too, and a body that stops short of
        ``limit`` within ``max_bytes`` received is read to its end."""
        codings = self._codings
        decoder = Decoder(codings, limit, truncate=True, deadline=self.deadline) if codings else None
        out = bytearray()
        while len(out) < limit and self.received <= self.max_bytes:
            chunk = self.next_chunk()
            if not chunk:
                break
            self.received += len(chunk)
            if decoder is not None:
                decoder.feed_into(chunk, out)
                if decoder.full:  # a stage was fed ``limit`` bytes: more of the body changes nothing
                    break
            else:
                out += chunk
        if decoder is not None and len(out) < limit:
            decoder.feed_into(b"", out)  # what the decoder still holds, as read() takes it
        return bytes(out[:limit])

    def next_chunk(self) -> bytes:
        """The next chunk of the raw (still encoded) body, waiting at most until the deadline; b"" at the
        body's end. ``timeout`` if the deadline passed, including an EOF the watchdog made by cutting the
        socket (that EOF is not the end of the body)."""
        r = self.r
        sock = getattr(r.raw.connection, "sock", None) if r.raw.connection is not None else None
        if sock is not None:
            sock.settimeout(self.remaining())
        chunk = r.raw.read1(CHUNK, decode_content=False)
        if not chunk and time.monotonic() >= self.deadline:
            raise Timeout("body", r.status_code)
        return chunk
