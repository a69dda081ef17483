"""What a response body is, and how to undo its Content-Encoding without trusting its size.

* ``kind_of`` maps a media type to what the worker does with it (html, xml, text, or nothing);
  ``sniff`` names the type of a body sent without one; ``looks_binary`` catches binary served as text.
* ``Decoder`` undoes gzip, deflate and brotli incrementally and refuses to inflate past a limit, so a
  compression bomb costs the limit, not its expansion.
* ``http_date`` reads an HTTP-date header value (Date, Expires, Last-Modified, Retry-After).

Failures are ``ContentError`` with a protocol error code (``too_large`` or ``decode_error``).
"""

from __future__ import annotations

import email.utils
import re
import time
import zlib
from collections.abc import Iterator

import brotli

from . import charset

DECODE_STEP = 1 << 20  # bytes of decoded output per step (see Decoder)
# urllib3's limit too: no real server stacks more, and each stage is a decompressor (a header listing
# thousands of codings cost a RecursionError before this cap).
MAX_CODINGS = 5


def http_date(value: str | bytes | None) -> float | None:
    """An HTTP-date (RFC 9110 5.6.7, any of its three forms) as epoch seconds; None if absent or bad."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class ContentError(Exception):
    """A body that cannot be decoded within the rules; ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# -- content types -------------------------------------------------------------------------------------

HTML_TYPES = frozenset(("text/html", "application/xhtml+xml"))
XML_TYPES = frozenset(("application/xml", "text/xml", "application/rss+xml", "application/atom+xml"))
TEXT_TYPES = frozenset(("text/plain",))
PDF_TYPES = frozenset(("application/pdf", "application/x-pdf"))
# Types a server sends when it does not know better: a PDF among them is told by its first bytes.
GENERIC_TYPES = frozenset(("application/octet-stream", "binary/octet-stream", "application/unknown"))
PDF_MAGIC = b"%PDF-"


def kind_of(ctype: str, pdf: bool = False) -> str | None:
    """'html', 'xml', 'text', 'pdf' (only with ``pdf``) or None (unsupported) for a bare media type."""
    if pdf and ctype in PDF_TYPES:
        return "pdf"
    if ctype in HTML_TYPES:
        return "html"
    if ctype in XML_TYPES or ctype.endswith("+xml"):
        return "xml"
    if ctype in TEXT_TYPES:
        return "text"
    return None


_BINARY_MAGIC = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"RIFF", "application/octet-stream"),
    (b"OggS", "application/ogg"),
    (b"\x00\x00\x00", "application/octet-stream"),  # ISO media (mp4, ...) and other binary headers
)
_HTML_STARTS = (
    b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<iframe", b"<h1", b"<div", b"<font",
    b"<table", b"<a", b"<style", b"<title", b"<b", b"<br", b"<p", b"<!--",
)  # fmt: skip


def sniff(head: bytes) -> str:
    """Media type of a body sent without Content-Type (a subset of the WHATWG MIME sniffing rules)."""
    b = charset.bom(head)
    if b or charset.sniff_utf16(head):
        text = head[b[1] if b else 0 :].decode(b[0] if b else charset.sniff_utf16(head) or "utf-8", "replace")
        probe = text.lstrip().lower().encode("ascii", "replace")
    else:
        for magic, ctype in _BINARY_MAGIC:
            if head.startswith(magic):
                return ctype
        probe = head.lstrip().lower()
    if probe.startswith(b"<?xml"):
        return "application/rss+xml" if b"<rss" in probe else "application/xml"
    if probe.startswith(_HTML_STARTS):
        return "text/html"
    if not b and any(c in head for c in b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x1a\x1b"):
        return "application/octet-stream"
    return "text/plain"


def looks_binary(head: bytes) -> bool:
    """NUL bytes in a body declared as text (and not UTF-16/32): it is not text."""
    return b"\x00" in head and not charset.bom(head) and not charset.sniff_utf16(head)


# -- decompression ------------------------------------------------------------------------------------


def content_codings(header: str) -> list[str]:
    """The codings a Content-Encoding header lists, in the order they were applied (``identity`` dropped)."""
    codings = (c.strip().lower() for c in header.split(","))
    return [c for c in codings if c and c != "identity"]


def _corrupt_reason(e: Exception) -> str:
    """``invalid code lengths set`` out of zlib's ``Error -3 while decompressing data: ...``."""
    if isinstance(e, brotli.error):
        return "not a valid brotli stream"
    return re.sub(r"^Error -?\d+ while [a-z ]+: ", "", str(e))


class _Stage:
    """One coding to undo: its decompressor, and how many bytes it has been fed."""

    def __init__(self, coding: str):
        self.coding = coding
        self.fed = 0
        if coding in ("gzip", "x-gzip"):
            self.kind, self.obj = "zlib", zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self.kind, self.obj = "deflate", None  # zlib-wrapped or raw: decided on the first bytes
        elif coding == "br":
            self.kind, self.obj = "br", brotli.Decompressor()
        else:
            raise ContentError("decode_error", f"unsupported Content-Encoding {coding!r}")

    def ended(self) -> bool:
        """The coding's stream is complete: any more data is not part of it."""
        if self.kind == "zlib":
            return self.obj.eof
        return self.kind == "br" and self.obj.is_finished()

    def _trailing(self) -> ContentError:
        return ContentError("decode_error", f"data after the end of the compressed stream ({self.coding})")

    def run(self, data: bytes) -> Iterator[bytes]:
        """Undo this coding of ``data``, in pieces of at most DECODE_STEP bytes."""
        if not data and self.kind != "br":
            return
        if data and self.ended():
            raise self._trailing()
        if self.kind == "deflate":
            wbits = zlib.MAX_WBITS if (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS
            self.kind, self.obj = "zlib", zlib.decompressobj(wbits)
        if self.kind == "zlib":
            yield from self._run_zlib(data)
        else:
            yield from self._run_br(data)

    def _run_zlib(self, data: bytes) -> Iterator[bytes]:
        obj = self.obj
        while data:
            piece = obj.decompress(data, DECODE_STEP)
            data = obj.unconsumed_tail
            if obj.unused_data:
                # Past the stream's end zlib keeps every later byte in unused_data, uncapped, copying it
                # again on each call: refused at the first such byte instead.
                raise self._trailing()
            if not piece and data:
                # Unreachable in practice; better to fail than to loop or drop data.
                raise ContentError("decode_error", "decompressor made no progress")
            if piece:
                yield piece

    def _run_br(self, data: bytes) -> Iterator[bytes]:
        obj = self.obj
        if data:
            piece = obj.process(data, output_buffer_limit=DECODE_STEP)
            if piece:
                yield piece
        while not obj.can_accept_more_data():
            piece = obj.process(b"", output_buffer_limit=DECODE_STEP)
            if not piece:
                break
            yield piece


class Decoder:
    """Incremental Content-Encoding decoder that never inflates more than ``limit`` bytes in total.

    Output comes in pieces of at most DECODE_STEP bytes, and the limit is checked after each piece, so a
    bomb (1000:1 or more) costs at most ``limit`` + DECODE_STEP bytes before it is refused, not the
    whole expansion of one network chunk. With stacked codings every stage is bounded, not only the last:
    what an inner stage is fed counts against ``limit`` as the output does, data after the end of any
    stage's stream is a ``decode_error``, and ``deadline`` (time.monotonic) is checked after every piece
    of every stage (``timeout``).

    ``truncate`` (sniffing, robots.txt prefixes): instead of failing at the limit, keep what fits and set
    ``full``; later input is ignored, and the reader stops reading.
    """

    def __init__(self, encodings: list[str], limit: int, truncate: bool = False, deadline: float | None = None):
        if len(encodings) > MAX_CODINGS:
            raise ContentError(
                "decode_error", f"Content-Encoding lists {len(encodings)} codings (at most {MAX_CODINGS})"
            )
        self.limit = limit
        self.truncate = truncate
        self.deadline = deadline
        self.total = 0
        self.full = False
        # Content-Encoding lists codings in the order applied: undo them last to first.
        self.stages = [_Stage(e) for e in reversed(encodings)]

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise ContentError("timeout", "decoding the body did not finish within the timeout")

    def _over_limit(self) -> None:
        """A stage's input or the output passed the limit: refused unless truncating."""
        if not self.truncate:
            raise ContentError("too_large", f"decoded body exceeds max_decoded_bytes={self.limit}")

    def _pipe(self, i: int, data: bytes) -> Iterator[bytes]:
        if i == len(self.stages):
            yield data
            return
        stage = self.stages[i]
        cut = False
        if i > 0:  # an inner stage: what it is fed counts against the limit (the first stage's is max_bytes)
            room = self.limit - stage.fed
            if len(data) > room:
                self._over_limit()
                data, cut = data[:room], True
            stage.fed += len(data)
        for piece in stage.run(data):
            self._check_deadline()
            yield from self._pipe(i + 1, piece)
            if self.full:
                return
        if cut:
            self.full = True

    def feed_into(self, data: bytes, out: bytearray) -> None:
        """Decode ``data`` onto the end of ``out``; ``too_large`` as soon as the total passes the limit."""
        if self.full:
            return
        self._check_deadline()
        try:
            for piece in self._pipe(0, data):
                room = self.limit - self.total
                if len(piece) > room:
                    self._over_limit()
                    out += piece[:room]
                    self.total = self.limit
                    self.full = True
                    return
                out += piece
                self.total += len(piece)
        except (zlib.error, brotli.error) as e:
            raise ContentError("decode_error", f"corrupt compressed body: {_corrupt_reason(e)}") from None
