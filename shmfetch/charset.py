"""Bytes to str: which character encoding a body is in.

Order (first that gives a usable encoding wins):

1. a byte order mark (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE);
2. the ``charset`` parameter of the HTTP Content-Type;
3. for HTML/XML, ``<meta charset>``, ``<meta http-equiv="Content-Type" content="...; charset=...">`` or the
   XML declaration's ``encoding``, in the first ``META_SCAN_BYTES`` bytes;
4. detection: BOM-less UTF-16 (NUL byte pattern), strict UTF-8, then charset-normalizer.

Unlike requests we never assume ISO-8859-1 for undeclared text/html. Labels are mapped to the superset
codec browsers use (WHATWG Encoding Standard: latin1 -> windows-1252, gb2312 -> gb18030, shift_jis ->
cp932, euc-kr -> cp949, big5 -> big5hkscs), so real-world pages that declare the base set but use the
vendor extensions still decode. Decoding uses ``errors="replace"``: the result is always a valid str.
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer

META_SCAN_BYTES = 8192
DETECT_BYTES = 64 * 1024

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_SUPERSETS = {
    "latin1": "cp1252",
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "big5": "big5hkscs",
    "utf-16": "utf-16-le",  # no BOM (we checked): WHATWG says LE
    "utf-32": "utf-32-le",
}

_META_RE = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]+)""",
    re.IGNORECASE,
)
_XMLDECL_RE = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([a-zA-Z0-9_.:\-]+)""", re.IGNORECASE)


def normalize(label: str | bytes | None) -> str | None:
    """Python codec name for a charset label, or None if it is unknown."""
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "replace")
    label = label.strip().strip("\"'").lower()
    if label in ("x-user-defined", "replacement"):
        return None
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return _SUPERSETS.get(name, name)


def bom(body: bytes) -> tuple[str, int] | None:
    for mark, enc in _BOMS:
        if body.startswith(mark):
            return enc, len(mark)
    return None


def sniff_utf16(head: bytes) -> str | None:
    """BOM-less UTF-16 of mostly-ASCII markup: every other byte is NUL."""
    sample = head[:512]
    if len(sample) < 8:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.8 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.8 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    return None


def from_markup(head: bytes) -> str | None:
    """Encoding declared in a meta tag or an XML declaration."""
    m = _XMLDECL_RE.search(head) or _META_RE.search(head)
    if not m:
        return None
    enc = normalize(m.group(1))
    # An ASCII-readable declaration of a UTF-16/32 encoding is a lie (HTML spec: treat it as UTF-8).
    if enc and enc.startswith(("utf-16", "utf-32")):
        return "utf-8"
    return enc


def detect(body: bytes) -> str:
    """Best guess for an undeclared body."""
    utf16 = sniff_utf16(body)
    if utf16:
        return utf16
    sample = body[:DETECT_BYTES]
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as e:
        # A multibyte sequence cut off by our sample boundary is still UTF-8.
        if len(body) > DETECT_BYTES and e.start >= len(sample) - 3:
            return "utf-8"
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        return "utf-8"
    return normalize(best.encoding) or "utf-8"


def choose(body: bytes, http_charset: str | None, markup: bool = True) -> tuple[str, int]:
    """(codec, number of leading BOM bytes to skip) for ``body``."""
    b = bom(body)
    if b:
        return b
    enc = normalize(http_charset)
    if enc:
        return enc, 0
    if markup:
        head = body[:META_SCAN_BYTES]
        utf16 = sniff_utf16(head)
        if utf16:
            return utf16, 0
        enc = from_markup(head)
        if enc:
            return enc, 0
    return detect(body), 0


def decode(body: bytes, http_charset: str | None = None, markup: bool = True) -> tuple[str, str]:
    """(text, codec used). Never raises for any input bytes."""
    enc, skip = choose(body, http_charset, markup)
    # str() reads any buffer: no copy of a multi-MB body just to drop a BOM (or to get bytes).
    return str(memoryview(body)[skip:] if skip else body, enc, "replace"), enc
