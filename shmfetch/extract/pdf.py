"""PDF documents: their text, Markdown and metadata, with PDFium (pypdfium2), bounded in pages and time.

``extract_pdf(data, mode, ...)`` is a pure function of the document's bytes, the request's mode and flags,
the final URL, the page cap and the fetch's deadline; it returns a ``PdfText`` (the result fields, or an
error code and message). The worker's page step turns it into an Outcome (extract/page.py, ``PageStep._pdf_outcome``).

Text. PDFium gives each page's characters in content order with its own line breaks; we read one glyph
position and font size per line (not per character) and group lines into paragraphs:

* a paragraph ends where the next line drops more than 1.3 times the page's usual line spacing, moves up
  (a new column), changes font size, is indented against the page's left margin, starts with a bullet,
  or follows a short line that ends a sentence; a line set larger than the body text (heading-like) is a
  paragraph of its own;
* lines are joined with a space, except after a hyphen PDFium marked as a line-end hyphenation (dropped)
  or a hyphen (kept), and between two East Asian wide characters (CJK text has no spaces);
* ``text`` and ``main``: one paragraph a line, pages separated by a blank line; ``markdown``: paragraphs
  separated by a blank line, heading-like ones as ``#``/``##`` headings, page breaks as ``---``. Pages
  without text add nothing.
* ``main`` and ``markdown`` (the main content) drop each page's running header, footer and page number:
  a line among the two top or the two bottom lines of its page that repeats there, digits aside, on at
  least half of the pages (and at least two); and, at the very top or bottom of a page, a line that is
  only a page number (``7``, ``- 7 -``, ``Page 7 of 9``, ``vii``), however often it occurs.

Metadata: ``title`` is the information dictionary's Title, else the first heading-like line; ``description``
its Subject; ``published`` its CreationDate as YYYY-MM-DD (only with ``metadata``); ``lang`` the catalog's
/Lang, None when the document declares none; ``links`` (with ``links``) the URI actions of the link
annotations, resolved against the final URL like an HTML page's links (pagemeta.link_list).

Bounds: at most ``max_pages`` pages (``truncated``); the deadline is checked before the document is opened
and between pages (``timeout``). One page is never interrupted. PDFium inflates a stream whole when it
reads it, so a 2 MB PDF whose content stream inflates to 2 GB cost 3 GB of RSS: before PDFium sees the
document, its Flate streams (images aside: text extraction does not decode them) are inflated here, 16 KiB
of input at a time and counted, not kept; past ``max_inflated`` bytes in all the answer is ``too_large``. Errors: a document that needs a password
is ``decode_error`` "encrypted PDF"; one PDFium cannot open, a page it cannot load, or a file cut short
(no ``%%EOF`` near its end) is ``decode_error``. A document without any text is ok, with a ``message``.

PDFium is not thread-safe (not even across documents): every call is made holding ``LOCK``, which the
caller takes. pypdfium2 is imported on the first PDF, so a worker that never sees one does not load it.
"""

from __future__ import annotations

import bisect
import ctypes
import datetime
import math
import re
import statistics
import threading
import time
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .pagemeta import link_list

LOCK = threading.Lock()  # held around every use of PDFium in this process (the caller takes it)

HEADING_RATIO = 1.15  # a line this much larger than the body text is heading-like
PARAGRAPH_GAP = 1.3  # a drop this many times the usual line spacing starts a paragraph
EDGE_LINES = 2  # lines at a page's top and bottom that may be a running header or footer
EOF_WINDOW = 1024  # a complete PDF ends with %%EOF within its last KiB (trailing junk aside)
INFLATE_STEP = 16 * 1024  # compressed bytes inflated at a time: at most ~16.5 MiB out (zlib's ~1032:1)
DICT_WINDOW = 2048  # bytes before a "stream" keyword searched for its dictionary
NO_TEXT = "the PDF has no text layer (scanned or image-only pages); no OCR is done"

_LINE = re.compile(r"[^\r\n]+")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")  # one character in Python, two UTF-16 units in PDFium
_DIGITS = re.compile(r"\d+")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f\ufffe\uffff]")
_HYPHENS = ("\x02", "\xad")  # PDFium's mark for a hyphen that broke a word at a line end; a soft hyphen
_SENTENCE_END = (".", "!", "?", ":", "。", "！", "？")
_BULLETS = ("•", "◦", "▪", "‣", "⁃", "●", "○", "■", "□", "➢", "✓")
# A line that is only a page number: 7, - 7 -, Page 7, Page 7 of 9, 7 / 9, vii.
_PAGE_NUMBER = re.compile(r"(?i)(page\s+)?[-–—]?\s*(\d{1,5}|[ivxlcdm]{1,7})\s*[-–—]?(\s*(/|of)\s*\d{1,5})?")
_DATE = re.compile(r"D:(\d{4})(\d{2})?(\d{2})?")
_STREAM = re.compile(rb"stream\r?\n")

_pdfium: Any = None  # the pypdfium2 module, imported on first use
_raw: Any = None  # pypdfium2.raw: the PDFium C API


@dataclass
class PdfText:
    """The result fields of one PDF, or ``error`` = (code, message) and nothing else."""

    text: str = ""
    title: str | None = None
    description: str | None = None
    lang: str | None = None
    published: str | None = None
    links: list[dict[str, Any]] | None = None
    links_truncated: bool | None = None
    truncated: bool = False
    message: str | None = None
    error: tuple[str, str] | None = None

    def fields(self) -> dict[str, Any]:
        """The Outcome fields besides ``text`` (protocol.Outcome names)."""
        return {
            "title": self.title,
            "description": self.description,
            "lang": self.lang,
            "published": self.published,
            "links": self.links,
            "links_truncated": self.links_truncated,
            "truncated": self.truncated,
            "message": self.message,
        }


@dataclass(slots=True)
class _Line:
    text: str
    x: float  # origin of the first glyph, PDF units (y grows upwards)
    y: float  # baseline
    size: float  # font size of the first glyph
    right: float  # right edge of the last glyph
    hyphen: bool = False  # ends with a hyphen that PDFium marked as a line-end hyphenation
    heading: bool = False


@dataclass
class _Page:
    lines: list[_Line] = field(default_factory=list)
    uris: list[str] = field(default_factory=list)


def _load() -> None:
    global _pdfium, _raw
    if _pdfium is None:
        import pypdfium2
        import pypdfium2.raw

        _raw = pypdfium2.raw
        _pdfium = pypdfium2


def extract_pdf(
    data: bytes | bytearray,
    mode: str,
    *,
    links: bool,
    metadata: bool,
    final_url: str,
    max_pages: int,
    max_links: int,
    deadline: float,
    max_inflated: int = 256 << 20,
) -> PdfText:
    """The text and fields of the PDF ``data`` (see the module docstring). Call it holding ``LOCK``."""
    if time.monotonic() >= deadline:
        return PdfText(error=("timeout", "the fetch did not finish within the timeout"))
    if bytes(data[-EOF_WINDOW:]).find(b"%%EOF") < 0:
        return PdfText(error=("decode_error", "truncated PDF: no %%EOF at its end"))
    if error := inflated_over(data, max_inflated, deadline):
        return PdfText(error=error)
    _load()
    doc, error = _open(data)
    if error:
        return PdfText(error=error)
    try:
        return _extract(doc, mode, links, metadata, final_url, max_pages, max_links, deadline)
    finally:
        doc.close()


def inflated_over(data: bytes | bytearray, budget: int, deadline: float) -> tuple[str, str] | None:
    """``too_large`` if the document's Flate streams other than images inflate past ``budget`` bytes in
    all, ``timeout`` if counting them passes the deadline; else None. Streams are found by their
    ``stream`` keyword and ``endstream``; a corrupt one counts what inflates before the damage."""
    view = memoryview(data)
    total, pos = 0, 0
    while m := _STREAM.search(data, pos):
        start = m.end()
        end = data.find(b"endstream", start)
        end = len(data) if end < 0 else end
        pos = end
        head = bytes(view[max(0, m.start() - DICT_WINDOW) : m.start()])
        head = head[head.rfind(b" obj") + 1 :]  # this object's dictionary
        if b"/FlateDecode" not in head or b"/Image" in head:
            continue
        inflater = zlib.decompressobj()
        for at in range(start, end, INFLATE_STEP):
            try:
                total += len(inflater.decompress(view[at : min(at + INFLATE_STEP, end)]))
            except zlib.error:
                break
            if total > budget:
                return "too_large", f"the PDF's streams inflate to more than [pdf] max_inflated_bytes={budget}"
            if time.monotonic() >= deadline:
                return "timeout", "the fetch did not finish within the timeout (inflating the PDF's streams)"
    return None


def _open(data: bytes | bytearray) -> tuple[Any, tuple[str, str] | None]:
    """``(document, None)``, or ``(None, (code, message))`` for a document PDFium cannot open."""
    # A ctypes view of a bytearray: PDFium reads the body where it is, without a copy.
    buf = (ctypes.c_char * len(data)).from_buffer(data) if isinstance(data, bytearray) else data
    try:
        return _pdfium.PdfDocument(buf), None
    except _pdfium.PdfiumError as e:
        code = getattr(e, "err_code", None)
        if code == _raw.FPDF_ERR_PASSWORD:
            return None, ("decode_error", "encrypted PDF")
        if code == _raw.FPDF_ERR_SECURITY:
            return None, ("decode_error", "encrypted PDF (unsupported security handler)")
        return None, ("decode_error", f"corrupt PDF: {e}")


def _extract(
    doc: Any,
    mode: str,
    links: bool,
    metadata: bool,
    final_url: str,
    max_pages: int,
    max_links: int,
    deadline: float,
) -> PdfText:
    count = len(doc)
    pages: list[_Page] = []
    for i in range(min(count, max_pages)):
        if time.monotonic() >= deadline:
            return PdfText(error=("timeout", f"the PDF's page {i + 1} of {count} was not reached in time"))
        try:
            pages.append(_read_page(doc, i, links))
        except _pdfium.PdfiumError as e:
            return PdfText(error=("decode_error", f"corrupt PDF: page {i + 1}: {e}"))
    out = PdfText(truncated=count > max_pages)
    out.text, heading = _compose(pages, mode)
    info = doc.get_metadata_dict(skip_empty=True)
    out.title = _clean(info.get("Title")) or heading
    out.description = _clean(info.get("Subject"))
    out.lang = _clean(_catalog_lang(doc))
    if metadata:
        out.published = pdf_date(info.get("CreationDate"))
    if links:
        out.links, out.links_truncated = link_list((u for p in pages for u in p.uris), final_url, max_links)
    notes = []
    if not out.text:
        notes.append(NO_TEXT)
    if out.truncated:
        notes.append(f"the first {max_pages} of {count} pages ([pdf] max_pages)")
    out.message = "; ".join(notes) or None
    return out


def _read_page(doc: Any, index: int, with_links: bool) -> _Page:
    page = doc[index]
    try:
        textpage = page.get_textpage()
        try:
            lines = _lines(textpage)
        finally:
            textpage.close()
        return _Page(lines, _page_uris(doc, page) if with_links else [])
    finally:
        page.close()


def _lines(textpage: Any) -> list[_Line]:
    """The page's non-blank lines, in PDFium's order, with one position and size read per line."""
    raw = _raw
    full = textpage.get_text_range()
    # PDFium indexes its text in UTF-16 units: past a character outside the BMP, ours are one behind.
    astral = [m.start() for m in _ASTRAL.finditer(full)] if len(full.encode("utf-16-le")) > 2 * len(full) else []
    x, y = ctypes.c_double(), ctypes.c_double()
    left, right, bottom, top = ctypes.c_double(), ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
    out = []
    for m in _LINE.finditer(full):
        text = m.group()
        stripped = text.strip()
        if not stripped or not _CONTROLS.sub("", stripped).strip():
            continue
        # PDFium's text is its character list (generated spaces and line breaks included), so a position
        # in the text is a character index, counted in UTF-16 units.
        first = m.start() + len(text) - len(text.lstrip())
        last = m.start() + len(text.rstrip()) - 1
        if astral:
            first, last = first + bisect.bisect_left(astral, first), last + bisect.bisect_left(astral, last)
        raw.FPDFText_GetCharOrigin(textpage, first, x, y)
        raw.FPDFText_GetCharBox(textpage, last, left, right, bottom, top)
        size = raw.FPDFText_GetFontSize(textpage, first)
        hyphen = stripped.endswith(_HYPHENS)
        clean = " ".join(_CONTROLS.sub("", stripped[:-1] if hyphen else stripped).split())
        out.append(_Line(clean, x.value, y.value, size, right.value, hyphen))
    return out


def _page_uris(doc: Any, page: Any) -> list[str]:
    """The URIs of the page's link annotations, in the page's order."""
    raw = _raw
    pos, link = ctypes.c_int(0), raw.FPDF_LINK()
    out = []
    while raw.FPDFLink_Enumerate(page, pos, link):
        action = raw.FPDFLink_GetAction(link)
        if not action or raw.FPDFAction_GetType(action) != raw.PDFACTION_URI:
            continue
        n = raw.FPDFAction_GetURIPath(doc, action, None, 0)
        if n <= 1:
            continue
        buf = ctypes.create_string_buffer(n)
        raw.FPDFAction_GetURIPath(doc, action, buf, n)
        out.append(buf.raw[: n - 1].decode("latin-1"))  # the spec's URIs are 7-bit ASCII
    return out


def _catalog_lang(doc: Any) -> str | None:
    n = _raw.FPDFCatalog_GetLanguage(doc, None, 0)
    if n <= 2:
        return None
    buf = (ctypes.c_ushort * (n // 2))()
    _raw.FPDFCatalog_GetLanguage(doc, buf, n)
    return bytes(buf).decode("utf-16-le", "replace").rstrip("\x00")


def _clean(value: str | None) -> str | None:
    if not value:
        return None
    return " ".join(value.split()) or None


def pdf_date(value: str | None) -> str | None:
    """A PDF date (``D:YYYYMMDDHHmmSS...``; month and day default to 01) as ``YYYY-MM-DD``, else None."""
    m = _DATE.match(value.strip()) if value else None
    if not m:
        return None
    try:
        return datetime.date(int(m[1]), int(m[2] or 1), int(m[3] or 1)).isoformat()
    except ValueError:
        return None


# -- layout: lines to paragraphs ----------------------------------------------------------------------


def _compose(pages: list[_Page], mode: str) -> tuple[str, str | None]:
    """``(text of the document in mode, its first heading-like line or None)``."""
    repeated = _running_lines(pages)
    body = _body_size(pages)
    heading = None
    for i, page in enumerate(pages):
        for j, line in enumerate(page.lines):
            line.heading = line.size >= HEADING_RATIO * body and len(line.text) <= 200
            if line.heading and heading is None and (i, j) not in repeated:
                heading = line.text
    if mode != "text":  # main and markdown are the main content: no running headers and footers
        for i, page in enumerate(pages):
            page.lines = [ln for j, ln in enumerate(page.lines) if (i, j) not in repeated]
    paragraphs = [_paragraphs(page.lines) for page in pages]
    if mode == "markdown":
        top = max((ln.size for p in pages for ln in p.lines if ln.heading), default=0.0)
        blocks = ["\n\n".join(_markdown(para, top) for para in paras) for paras in paragraphs if paras]
        return "\n\n---\n\n".join(blocks), heading
    blocks = ["\n".join(_joined(para) for para in paras) for paras in paragraphs if paras]
    return "\n\n".join(blocks), heading


def _running_lines(pages: list[_Page]) -> set[tuple[int, int]]:
    """(page, line) of each running header, footer or page number (see the module docstring)."""
    seen: Counter[tuple[str, str]] = Counter()
    edges: list[list[tuple[int, tuple[str, str]]]] = []
    out = set()
    for i, page in enumerate(pages):
        order = sorted(range(len(page.lines)), key=lambda j: -page.lines[j].y)
        marks = [(j, ("top", _DIGITS.sub("#", page.lines[j].text))) for j in order[:EDGE_LINES]]
        marks += [(j, ("bottom", _DIGITS.sub("#", page.lines[j].text))) for j in order[-EDGE_LINES:]]
        edges.append(marks)
        seen.update({key for _, key in marks})
        out.update((i, j) for j in order[:1] + order[-1:] if _PAGE_NUMBER.fullmatch(page.lines[j].text))
    least = max(2, math.ceil(len(pages) / 2))
    out.update((i, j) for i, marks in enumerate(edges) for j, key in marks if seen[key] >= least)
    return out


def _body_size(pages: list[_Page]) -> float:
    """The font size most of the text is set in (weighted by characters)."""
    sizes: Counter[float] = Counter()
    for page in pages:
        for line in page.lines:
            sizes[round(line.size * 2) / 2] += len(line.text)
    return sizes.most_common(1)[0][0] if sizes else 0.0


def _paragraphs(lines: list[_Line]) -> list[list[_Line]]:
    """The page's lines grouped into paragraphs (see the module docstring)."""
    if not lines:
        return []
    drops = [a.y - b.y for a, b in zip(lines, lines[1:], strict=False) if 0 < a.y - b.y < 3 * a.size]
    spacing = statistics.median(drops) if drops else 1.2 * lines[0].size
    margin = min(ln.x for ln in lines)
    width = max(ln.right for ln in lines)
    out = [[lines[0]]]
    for prev, line in zip(lines, lines[1:], strict=False):
        if _starts_paragraph(prev, line, spacing, margin, width):
            out.append([line])
        else:
            out[-1].append(line)
    return out


def _starts_paragraph(prev: _Line, line: _Line, spacing: float, margin: float, width: float) -> bool:
    size = max(prev.size, line.size)
    drop = prev.y - line.y
    return (
        prev.heading
        or line.heading
        or drop < 0.5 * size  # moved up or sideways: a new column or a new block
        or drop > PARAGRAPH_GAP * spacing
        or abs(prev.size - line.size) > 0.1 * size
        or (line.x - margin > 0.8 * line.size and prev.x - margin < 0.3 * prev.size)  # indented first line
        or line.text.startswith(_BULLETS)
        or (prev.right < width - 4 * prev.size and prev.text.endswith(_SENTENCE_END))  # short last line
    )


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _joined(para: list[_Line]) -> str:
    """A paragraph's lines as one line of text."""
    text = para[0].text
    for prev, line in zip(para, para[1:], strict=False):
        if not line.text:
            continue
        if prev.hyphen or (text.endswith("-") and len(text) > 1 and text[-2].isalpha()):
            text += line.text
        elif text and _wide(text[-1]) and _wide(line.text[0]):
            text += line.text
        else:
            text += " " + line.text
    return text


def _markdown(para: list[_Line], top: float) -> str:
    text = _joined(para)
    if para[0].heading:
        return ("# " if para[0].size >= top else "## ") + text
    return text
