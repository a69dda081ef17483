"""Bytes to str: which character encoding a body is in.

Order (first that gives a usable encoding wins):

1. a byte order mark (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE);
2. the ``charset`` parameter of the HTTP Content-Type;
3. for HTML/XML, ``<meta charset>``, ``<meta http-equiv="Content-Type" content="...; charset=...">`` or the
   XML declaration's ``encoding``, in the first ``META_SCAN_BYTES`` bytes;
4. detection: BOM-less UTF-16 (NUL byte pattern), strict UTF-8, then charset-normalizer when the sample
   has enough non-ASCII bytes to judge (``DETECT_MIN_NON_ASCII``); otherwise windows-1252, as browsers do.

Unlike requests we never assume ISO-8859-1 for undeclared text/html that is valid UTF-8. Only WHATWG
encoding labels name a charset (webencodings holds the standard's table): a header or meta tag naming any
other Python codec (``base64``, ``rot13``, ``utf-7``, ``unicode_escape``, ...) is an unknown label and is
ignored. Labels map to the superset codec browsers use (latin1 -> windows-1252, gb2312 -> gb18030,
shift_jis -> cp932, euc-kr -> cp949, big5 -> big5hkscs), so real-world pages that declare the base set
but use the vendor extensions still decode. Decoding uses ``errors="replace"``: the result is always a
valid str.
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer
import webencodings

META_SCAN_BYTES = 8192
DETECT_BYTES = 64 * 1024
# Below this many non-ASCII bytes statistical detection is a guess (a Latin-1 "Caf\xe9 cr\xe8me" came out
# as windows-1250); the samples of real CJK, Cyrillic or Greek text in the tests have 100 or more.
DETECT_MIN_NON_ASCII = 64
FALLBACK = "cp1252"  # WHATWG's default for an undeclared page in the Western locales

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

_NON_ASCII = bytes(range(128, 256))  # bytes.translate deletes these: what is left is the ASCII
_META_RE = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]+)""",
    re.IGNORECASE,
)
_XMLDECL_RE = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([a-zA-Z0-9_.:\-]+)""", re.IGNORECASE)


def normalize(label: str | bytes | None) -> str | None:
    """Python codec name for a WHATWG encoding label, or None if it is not one (or names no real codec)."""
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "replace")
    enc = webencodings.lookup(label.strip().strip("\"'"))
    if enc is None or enc.name in ("x-user-defined", "replacement"):
        return None
    return _superset(enc.codec_info.name)


def _superset(codec: str) -> str:
    """The superset codec browsers decode ``codec`` with (a Python codec name)."""
    name = codecs.lookup(codec).name
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
    if len(sample) - len(sample.translate(None, _NON_ASCII)) < DETECT_MIN_NON_ASCII:
        return FALLBACK
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        return FALLBACK
    try:
        return _superset(best.encoding)
    except LookupError:
        return FALLBACK


def choose(body: bytes | bytearray, http_charset: str | None, markup: bool = True) -> tuple[str, int]:
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


def decode(body: bytes | bytearray, http_charset: str | None = None, markup: bool = True) -> tuple[str, str]:
    """(text, codec used). Never raises for any input bytes."""
    enc, skip = choose(body, http_charset, markup)
    return decode_as(body, enc, skip), enc


def decode_as(body: bytes | bytearray, enc: str, skip: int = 0) -> str:
    """``body`` without its first ``skip`` bytes, decoded with codec ``enc``. Never raises for any bytes."""
    # str() reads any buffer: no copy of a multi-MB body just to drop a BOM (or to get bytes).
    return str(memoryview(body)[skip:] if skip else body, enc, "replace")
