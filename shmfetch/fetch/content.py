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
import zlib
from collections.abc import Iterator
from typing import Any

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


class Decoder:
    """Incremental Content-Encoding decoder that never inflates more than ``limit`` bytes in total.

    Output comes in pieces of at most DECODE_STEP bytes, and the limit is checked after each piece, so a
    bomb (1000:1 or more) costs at most ``limit`` + DECODE_STEP bytes before it is refused, not the
    whole expansion of one network chunk.
    """

    def __init__(self, encodings: list[str], limit: int, truncate: bool = False):
        if len(encodings) > MAX_CODINGS:
            raise ContentError(
                "decode_error", f"Content-Encoding lists {len(encodings)} codings (at most {MAX_CODINGS})"
            )
        self.limit = limit
        self.truncate = truncate  # for sniffing: return what fits instead of failing
        self.total = 0
        # Content-Encoding lists codings in the order applied: undo them last to first.
        self.stages = [self._stage(e) for e in reversed(encodings)]

    @staticmethod
    def _stage(enc: str) -> Any:
        if enc in ("gzip", "x-gzip"):
            return ["zlib", zlib.decompressobj(16 + zlib.MAX_WBITS)]
        if enc == "deflate":
            return ["deflate", None]  # zlib-wrapped or raw: decided on the first bytes
        if enc == "br":
            return ["br", brotli.Decompressor()]
        raise ContentError("decode_error", f"unsupported Content-Encoding {enc!r}")

    @staticmethod
    def _run(stage: list, data: bytes) -> Iterator[bytes]:
        """Undo one coding of ``data``, in pieces of at most DECODE_STEP bytes."""
        kind, obj = stage
        if kind == "deflate":
            if not data:
                return
            wbits = zlib.MAX_WBITS if (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS
            stage[:] = ["zlib", zlib.decompressobj(wbits)]
            kind, obj = stage
        if kind == "zlib":
            while data:
                piece = obj.decompress(data, DECODE_STEP)
                data = obj.unconsumed_tail
                if not piece and data:
                    # Unreachable in practice; better to fail than to loop or drop data.
                    raise ContentError("decode_error", "decompressor made no progress")
                if piece:
                    yield piece
            return
        if data:
            piece = obj.process(data, output_buffer_limit=DECODE_STEP)
            if piece:
                yield piece
        while not obj.can_accept_more_data():
            piece = obj.process(b"", output_buffer_limit=DECODE_STEP)
            if not piece:
                break
            yield piece

    def _pipe(self, i: int, data: bytes) -> Iterator[bytes]:
        if i == len(self.stages):
            yield data
            return
        for piece in self._run(self.stages[i], data):
            yield from self._pipe(i + 1, piece)

    def feed_into(self, data: bytes, out: bytearray) -> None:
        """Decode ``data`` onto the end of ``out``; ``too_large`` as soon as the total passes the limit."""
        try:
            for piece in self._pipe(0, data):
                room = self.limit - self.total
                if len(piece) > room:
                    if self.truncate:
                        out += piece[:room]
                        self.total = self.limit
                        return
                    raise ContentError("too_large", f"decoded body exceeds max_decoded_bytes={self.limit}")
                out += piece
                self.total += len(piece)
        except (zlib.error, brotli.error) as e:
            raise ContentError("decode_error", f"corrupt compressed body: {e}") from None
