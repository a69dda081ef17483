"""A response body becomes an Outcome: the worker's page step, run under the extraction gate.

``PageStep(cfg)`` is what a Fetcher hands a final response to (shmfetch.fetch.fetcher.PageStep): it names
the body's type (header or sniff), reads it within the caps, refuses binary served as text, and extracts
text, metadata and links while holding a slot of the extraction gate. ``page_fetcher`` builds a Fetcher
with this step: the workers, the tests and the tools all get theirs from it. The fetch package imports
nothing from here; this module uses its body reader and its errors.
"""

from __future__ import annotations

import threading
from typing import Any

import requests
from lxml import etree

from ..config import FetchConfig, PdfConfig, SecurityConfig
from ..fetch import charset
from ..fetch.body import SNIFF_BYTES, Body
from ..fetch.content import kind_of, looks_binary
from ..fetch.errors import Timeout
from ..fetch.fetcher import Fetcher
from ..options import Options
from ..protocol import Outcome
from .html import xml_to_text
from .maintext import html_text
from .pagemeta import page_fields
from .pdf import LOCK as PDFIUM_LOCK
from .pdf import extract_pdf
from .sitemap import inflate, robots_sitemaps, sitemap_entries


class ExtractGate:
    """How many threads of this process may decode and extract at once.

    Decoding and extraction hold the GIL for most of their time, so running them in every fetch thread at
    once gains nothing and multiplies the peak memory (a parsed tree is ~10x its page). Two at a time kept
    loadgen's pages/s (204 vs 199 unlimited, 188 with one) and the worker's peak RSS at 57-59 MiB instead
    of 61-67 MiB (docs/BENCHMARKS.md, P5). A fetch waits for a slot only until its deadline.
    """

    def __init__(self, slots: int):
        self._sem = threading.BoundedSemaphore(slots)

    def acquire(self, timeout: float) -> bool:
        return self._sem.acquire(timeout=max(timeout, 0.0))

    def try_acquire(self) -> bool:
        return self._sem.acquire(blocking=False)

    def release(self) -> None:
        self._sem.release()


EXTRACT_GATE = ExtractGate(2)
# Main content and Markdown (trafilatura) take 3-5x as long per page as full text: they get slots of their
# own, so that pages in those modes queue behind each other and never hold up a full-text page.
MAIN_EXTRACT_GATE = ExtractGate(2)


def _http_charset(ctype_header: str) -> str | None:
    """The charset a Content-Type header names, or None."""
    if "charset" not in ctype_header.lower():
        return None
    return requests.utils.get_encoding_from_headers({"content-type": ctype_header})


class PageStep:
    """Turns a final response into an Outcome: type, capped body, extraction under the gate, text cap.

    ``pdf``: the [pdf] section; without it (or with ``enabled = false``) PDFs are
    ``unsupported_content_type``. The PDF library is imported by the first PDF (shmfetch/extract/pdf.py).
    """

    def __init__(self, cfg: FetchConfig, pdf: PdfConfig | None = None):
        self.cfg = cfg
        self.pdf = pdf if pdf is not None and pdf.enabled else None

    def __call__(self, r: requests.Response, url: str, body: Body, opts: Options) -> Outcome:
        status = r.status_code
        status_err = None if 200 <= status < 300 else ("http_status", f"HTTP {status} {r.reason or ''}".strip())
        ctype = body.media_type(pdf=self.pdf is not None)
        if opts.sitemap:
            return self._sitemap_outcome(r, url, ctype, status_err, body, opts.sitemap)
        kind = kind_of(ctype, pdf=self.pdf is not None)
        if kind is None:
            code, msg = status_err or ("unsupported_content_type", f"content type {ctype!r} is not extracted")
            return Outcome(False, status, url, ctype, "", code, msg)
        data = body.read()
        if kind == "pdf":
            return self._pdf_outcome(data, r, url, ctype, status_err, body, opts)
        if kind == "html" and looks_binary(data[:SNIFF_BYTES]):
            code, msg = status_err or ("decode_error", f"binary body served as {ctype}")
            return Outcome(False, status, url, ctype, "", code, msg)
        text, fail, page = self._extract_gated(data, r, kind, url, body, opts)
        del data
        if fail:
            return Outcome(False, status, url, ctype, "", *(status_err or fail))
        body.remaining("extract")
        too_large = self._text_too_large(text)
        if too_large:
            return Outcome(False, status, url, ctype, "", "too_large", too_large)
        if status_err:
            return Outcome(False, status, url, ctype, text, *status_err, **page)
        return Outcome(True, status, url, ctype, text, **page)

    def _sitemap_outcome(
        self,
        r: requests.Response,
        url: str,
        ctype: str,
        status_err: tuple[str, str] | None,
        body: Body,
        kind: str,
    ) -> Outcome:
        """A crawl's sitemap fetch (extract/sitemap.py): its URLs as ``links``, no text."""
        if status_err:
            return Outcome(False, r.status_code, url, ctype, "", *status_err)
        try:
            data = inflate(body.read(), self.cfg.max_decoded_bytes)
            if not EXTRACT_GATE.acquire(body.remaining("extract_wait")):
                raise Timeout("extract_wait", r.status_code, url)
            try:
                links = robots_sitemaps(data) if kind == "robots" else sitemap_entries(data)
            finally:
                EXTRACT_GATE.release()
        except (ValueError, etree.LxmlError) as e:
            why = f"cannot read the sitemap: {e}"
            return Outcome(False, r.status_code, url, ctype, "", "decode_error", why)
        return Outcome(True, r.status_code, url, ctype, "", links=links, links_truncated=False)

    def _pdf_outcome(
        self,
        data: bytearray,
        r: requests.Response,
        url: str,
        ctype: str,
        status_err: tuple[str, str] | None,
        body: Body,
        opts: Options,
    ) -> Outcome:
        """A PDF body as an Outcome (shmfetch/extract/pdf.py): text, fields, ``truncated``."""
        got = self._extract_pdf_gated(data, r, url, body, opts)
        status = r.status_code
        if got.error:
            if got.error[0] == "timeout":
                raise Timeout("extract", status, url)  # worded like any page's extraction timeout
            return Outcome(False, status, url, ctype, "", *(status_err or got.error))
        body.remaining("extract")  # as for a page: a result finished after the deadline is `timeout`
        if too_large := self._text_too_large(got.text):
            return Outcome(False, status, url, ctype, "", "too_large", too_large)
        fields = got.fields()
        if status_err:
            fields["message"] = status_err[1]
            return Outcome(False, status, url, ctype, got.text, status_err[0], **fields)
        return Outcome(True, status, url, ctype, got.text, **fields)

    def _extract_pdf_gated(
        self, data: bytearray, r: requests.Response, url: str, body: Body, opts: Options
    ) -> Any:
        """``extract_pdf`` holding PDFium, then a slot of the gate. PDFium serves one thread of the process
        at a time: a PDF waits for it *before* it takes a slot, so queued PDFs hold no slot a page could use.
        """
        if not PDFIUM_LOCK.acquire(timeout=body.remaining("extract_wait")):
            raise Timeout("extract_wait", r.status_code, url)
        try:
            if not EXTRACT_GATE.acquire(body.remaining("extract_wait")):
                raise Timeout("extract_wait", r.status_code, url)
            try:
                body.remaining("extract_wait")
                pdf = self.pdf
                assert pdf is not None
                return extract_pdf(
                    data, opts.mode, links=opts.links, metadata=opts.metadata, final_url=url,
                    max_pages=pdf.max_pages, max_links=self.cfg.max_links, deadline=body.deadline,
                    max_inflated=pdf.max_inflated_bytes,
                )  # fmt: skip
            finally:
                EXTRACT_GATE.release()
        finally:
            PDFIUM_LOCK.release()

    def _extract_gated(
        self, data: bytearray, r: requests.Response, kind: str, url: str, body: Body, opts: Options
    ) -> tuple[str, tuple[str, str] | None, dict[str, Any]]:
        """``_extract`` while holding a slot of the gate for the page's mode, waited for until the deadline."""
        gate = EXTRACT_GATE if opts.mode == "text" or kind != "html" else MAIN_EXTRACT_GATE
        if not gate.acquire(body.remaining("extract_wait")):
            raise Timeout("extract_wait", r.status_code, url)
        try:
            body.remaining("extract_wait")  # the wait may have used the rest of it: do not start a pass
            return self._extract(data, _http_charset(r.headers.get("Content-Type", "")), kind, url, opts)
        finally:
            gate.release()

    def _text_too_large(self, text: str) -> str | None:
        """Why ``text`` is over ``max_text_bytes`` as UTF-8, or None."""
        # UTF-8 takes at most 4 bytes a character: most texts are far under the cap without encoding
        # them here (the result packer encodes them once more anyway).
        n = 4 * len(text)
        if n > self.cfg.max_text_bytes:
            n = len(text.encode("utf-8", "surrogatepass"))
        if n > self.cfg.max_text_bytes:
            return f"text of {n} bytes exceeds max_text_bytes"
        return None

    def _extract(
        self, body: bytes | bytearray, http_charset: str | None, kind: str, url: str, opts: Options
    ) -> tuple[str, tuple[str, str] | None, dict[str, Any]]:
        """``(text, (code, message) of a failure or None, metadata and links of an HTML page or {})``."""
        page: dict[str, Any] = {}
        try:
            if kind == "html":
                # The bytes go to the parser as they are (no str copy, no re-encoding) when they are UTF-8.
                enc, skip = charset.choose(body, http_charset)
                # A tree costs ~280 bytes a tag: over the budget the text comes from the streaming parser,
                # and the page's links, which could not be read, are reported truncated.
                tree = body.count(b"<") <= self.cfg.max_tree_tags
                text, root = html_text(body, opts.mode, url, self.cfg.noscript, enc, skip, tree)
                page = page_fields(root, url, opts.metadata, opts.links, self.cfg.max_links)
                if not tree and opts.links:
                    page["links_truncated"] = True
            else:
                text, _enc = charset.decode(body, http_charset, markup=kind != "text")
                if kind == "xml":
                    text = xml_to_text(text)
        except (ValueError, LookupError) as e:
            return "", ("decode_error", f"cannot decode or parse the body: {e}"), {}
        return text, None, page


def page_fetcher(
    cfg: FetchConfig, security: SecurityConfig, answer_pauses: bool = False, pdf: PdfConfig | None = None
) -> Fetcher:
    """A Fetcher whose ``fetch`` extracts pages: the one the workers, the tests and the tools use.
    ``pdf``: the [pdf] section, for PDFs to be extracted (the workers pass theirs)."""
    return Fetcher(cfg, security, answer_pauses=answer_pauses, page=PageStep(cfg, pdf))
