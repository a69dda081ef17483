"""The ``main`` and ``markdown`` content modes: a page's main content, boilerplate removed, by trafilatura.

``main_content(root, url, "main" | "markdown")`` takes the tree the worker parsed (extract.parse_html,
HtmlElement nodes), so the page is parsed once. trafilatura never changes a tree handed to it: 2.3 copies
it before cleaning (``bare_extraction``: ``if tree is filecontent: tree = copy(tree)``), so we add no copy
of our own; tests/test_extract_modes.py checks that the tree is unchanged afterwards.

Settings (EXTRACT_OPTIONS): ``fast=True`` skips trafilatura's second opinion (readability/justext
comparison), which costs more than the main pass and gained nothing on our evaluation pages
(docs/BENCHMARKS.md, "Content modes"); comments are boilerplate here (a pipeline wants the article);
tables stay. Markdown adds formatting (headings, lists, emphasis, code, tables) to the same selection as
``main``, without trafilatura's link mode: that mode (``include_links``) keeps every ``<a>`` as content, which
changes *which* block it selects; on a tech-news page whose sidebar blurbs are ``<p>``s inside links it
returned the sidebar instead of the article (F1 0.21 against 0.94 for main on tests/pages/guide-sidebar.html,
0.14 against 0.85 on the public benchmark page it copies). Without it Markdown's text, its syntax stripped,
scores as ``main`` does (docs/BENCHMARKS.md, "Content modes"; tests/test_markdown.py), and
``inline_links`` puts the links of the selected blocks back.

trafilatura (and what it imports) is loaded on the first main/markdown request: a worker that only ever
serves full text does not pay its memory.
"""

from __future__ import annotations

import copy
import logging
import re
import urllib.parse
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
    "include_links": False,  # links change trafilatura's selection: see the module docstring
}

_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_LINE_MARKS = re.compile(r"^\s*(?:#{1,6}\s+|>\s?|[-*+]\s+|\d+\.\s+|\|)", re.M)
_MD_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$|^\s*\|?\s*:?-{3,}.*$", re.M)
_MD_INLINE = re.compile(r"\*\*|__|(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w)|`+")
_MD_PIPE = re.compile(r"\s\|(?=\s|$)")


def strip_markdown(md: str) -> str:
    """The text of Markdown without its syntax (headings, emphasis, links, lists, quotes, code marks,
    table pipes and rules), so that Markdown is scored as text against the same expected texts."""
    text = _MD_LINK.sub(r"\1", md)
    text = _MD_RULE.sub("", text)
    text = _MD_LINE_MARKS.sub("", text)
    return _MD_INLINE.sub("", _MD_PIPE.sub(" ", text))


# What kind of Markdown block each HTML text block becomes.
_BLOCK_KINDS = {
    **dict.fromkeys(("p", "blockquote", "dd", "dt", "figcaption"), "para"),
    "li": "item",
    **dict.fromkeys(("h1", "h2", "h3", "h4", "h5", "h6"), "heading"),
    **dict.fromkeys(("td", "th"), "cell"),
}
_HEADING = re.compile(r"#{1,6}\s")
_ITEM = re.compile(r"\s*(?:[-*+]|\d+\.)\s")
_PARAGRAPH = re.compile(r"[^\n]+(?:\n[^\n]+)*")
_LINE = re.compile(r"[^\n]+")
_CELL = re.compile(r"(?<=\|)[^|\n]+(?=\|)")


def _plain(md: str) -> str:
    return " ".join(strip_markdown(md).split())


def _kind(chunk: str) -> str:
    if _HEADING.match(chunk):
        return "heading"
    return "item" if _ITEM.match(chunk) else "para"


def _md_spans(md: str) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Where each block of ``md`` is, by its kind and plain text: paragraphs, lines (list items,
    headings) and table cells."""
    spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for pattern in (_PARAGRAPH, _LINE):
        for m in pattern.finditer(md):
            spans.setdefault((_kind(m.group()), _plain(m.group())), []).append(m.span())
    for m in _CELL.finditer(md):
        spans.setdefault(("cell", _plain(m.group())), []).append(m.span())
    return spans


def _anchors(root: Any, url: str | None) -> list[tuple[tuple[str, str], str, str]]:
    """``((kind, plain text) of its block, anchor text, absolute href)`` of each link in a text block."""
    out = []
    for a in root.iter("a"):
        href = (a.get("href") or "").strip()
        text = " ".join("".join(a.itertext()).split())
        if len(text) < 2 or not href or href.startswith(("#", "javascript:")):
            continue
        block = next(a.iterancestors(*_BLOCK_KINDS), None)
        if block is not None:
            key = (_BLOCK_KINDS[block.tag], " ".join("".join(block.itertext()).split()))
            out.append((key, text, urllib.parse.urljoin(url or "", href)))
    return out


def inline_links(md: str, root: Any, url: str | None) -> str:
    """``md`` with ``[text](href)`` for the links of the blocks it holds, and of no others.

    Markdown is extracted without trafilatura's link mode, which changes what it selects (see the module
    docstring); the links come back here: an anchor of the page is linked where its whole block (the
    paragraph, list item, heading or cell around it) is a block of the same kind in ``md``, so that a link
    of a sidebar or a menu never lands on the same words in the article.
    """
    spans = _md_spans(md)
    edits: list[tuple[int, int, str]] = []
    for block, text, href in _anchors(root, url):
        for start, end in spans.get(block, ()):
            at = md.find(text, start, end)
            while at >= 0 and any(s < at + len(text) and at < e for s, e, _ in edits):
                at = md.find(text, at + 1, end)
            if at >= 0:
                edits.append((at, at + len(text), f"[{text}]({href})"))
                break
    for start, end, link in sorted(edits, reverse=True):
        md = md[:start] + link + md[end:]
    return md


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
    tree: bool = True,
) -> tuple[str, Any]:
    """A page's text in ``mode``, parsed once: ``(text, root)``. ``html`` is markup in ``encoding`` after
    ``skip`` bytes of BOM (as shmfetch.charset.choose names them), or a str. The worker goes on to read
    metadata and links from ``root``; it is None for an empty page, and for one nested too deep for
    libxml2, whose full text then comes from extract's streaming parser, in every mode. So does a page
    given ``tree=False`` (over ``[fetch] max_tree_tags`` tags: shmfetch.extract.page): its tree would cost
    ~280 bytes a tag, the stream a small multiple of the page."""
    if isinstance(html, str):
        html, encoding, skip = html.encode("utf-8", "replace"), "utf-8", 0
    if not tree:
        return text_without_tree(html, encoding, skip, noscript), None
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
    text = _extract(root, options=settings) or ""
    return inline_links(text, root, url) if mode == "markdown" and text else text
