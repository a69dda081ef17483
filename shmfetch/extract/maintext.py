"""The ``main`` and ``markdown`` content modes: a page's main content, boilerplate removed, by trafilatura.

``main_content(root, url, "main" | "markdown")`` takes the tree the worker parsed (extract.parse_html,
HtmlElement nodes), so the page is parsed once. trafilatura never changes a tree handed to it: 2.3 copies
it before cleaning (``bare_extraction``: ``if tree is filecontent: tree = copy(tree)``), so we add no copy
of our own; tests/test_extract_modes.py checks that the tree is unchanged afterwards.

Settings (EXTRACT_OPTIONS): ``fast=True`` skips trafilatura's second opinion (readability/justext
comparison), which costs more than the main pass and gained nothing on our evaluation pages
(docs/BENCHMARKS.md, "Content modes"); comments are boilerplate here (a pipeline wants the article);
tables stay. Markdown adds formatting and links so that emphasis, links and code blocks survive.

trafilatura (and what it imports) is loaded on the first main/markdown request: a worker that only ever
serves full text does not pay its memory.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from lxml import etree

from .html import TooDeep, parse_html, text_without_tree, tree_to_text

EXTRACT_OPTIONS: dict[str, Any] = {
    "fast": True,
    "include_comments": False,
    "include_tables": True,
    "deduplicate": False,
    "with_metadata": False,
}
MARKDOWN_OPTIONS: dict[str, Any] = {
    "output_format": "markdown",
    "include_formatting": True,
    "include_links": True,
}

_extract: Any = None
_settings: dict[str, Any] = {}  # mode -> trafilatura Extractor, built once per process


def _load() -> None:
    """Import trafilatura and build one Extractor (its settings object) per mode.

    ``extract()`` otherwise builds an Extractor from keyword arguments on every call, reading its
    defaults through configparser: about 1 ms a page, a tenth of the main-mode cost (py-spy and cProfile,
    docs/BENCHMARKS.md "Content modes"). Each call gets a shallow copy carrying its own URL.
    """
    global _extract
    import trafilatura
    from trafilatura.settings import Extractor

    # "discarding data" and similar per-page warnings would flood the daemon's log.
    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    common = {
        "fast": EXTRACT_OPTIONS["fast"],
        "comments": EXTRACT_OPTIONS["include_comments"],
        "tables": EXTRACT_OPTIONS["include_tables"],
        "dedup": EXTRACT_OPTIONS["deduplicate"],
        "with_metadata": EXTRACT_OPTIONS["with_metadata"],
    }
    _settings["main"] = Extractor(**common)
    _settings["markdown"] = Extractor(
        output_format=MARKDOWN_OPTIONS["output_format"],
        formatting=MARKDOWN_OPTIONS["include_formatting"],
        links=MARKDOWN_OPTIONS["include_links"],
        **common,
    )
    _extract = trafilatura.extract


def html_text(
    html: bytes | bytearray | str,
    mode: str,
    url: str | None,
    noscript: str = "drop",
    encoding: str = "utf-8",
    skip: int = 0,
) -> tuple[str, Any]:
    """A page's text in ``mode``, parsed once: ``(text, root)``. ``html`` is markup in ``encoding`` after
    ``skip`` bytes of BOM (as shmfetch.charset.choose names them), or a str. The worker goes on to read
    metadata and links from ``root``; it is None for an empty page, and for one nested too deep for
    libxml2, whose full text then comes from extract's streaming parser, in every mode."""
    if isinstance(html, str):
        html, encoding, skip = html.encode("utf-8", "replace"), "utf-8", 0
    try:
        root = parse_html(html, encoding, skip)
        if mode == "text":
            return tree_to_text(root, noscript), root
    except (TooDeep, etree.XSLTApplyError):
        return text_without_tree(html, encoding, skip, noscript), None
    return main_content(root, url, mode), root


def main_content(root: Any, url: str | None, mode: str) -> str:
    """Main content of a parsed page as plain text (``main``) or Markdown (``markdown``); "" if none."""
    if root is None:
        return ""
    if _extract is None:
        _load()
    settings = copy.copy(_settings[mode])
    settings.url = settings.source = url
    return _extract(root, options=settings) or ""
