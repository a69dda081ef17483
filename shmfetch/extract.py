"""HTML and XML to plain text with lxml.

Rules (docs/FETCH.md has the full list and the reasons):

* removed with their content: script, style, template, iframe, object, embed, head metadata, comments,
  processing instructions; ``noscript`` too unless ``noscript="keep"`` (a browser with JS enabled does not
  show it);
* the ``<title>`` is kept as the first line (when there is one and it is not empty);
* block elements start a new line, ``<br>`` is a line break; empty lines are dropped, so the output is
  one line per non-empty block;
* table cells of a row are separated by a tab;
* ``<pre>`` (and ``<textarea>``, ``<listing>``, ``<plaintext>``) keep their whitespace verbatim;
  elsewhere runs of whitespace collapse to one space and lines are stripped;
* entities are decoded; ``&nbsp;`` becomes a plain space and collapses like one.

How: lxml parses into a tree in C; a small XSLT stylesheet (libxslt, also C) drops the unwanted elements
and writes the text with marker characters (Unicode noncharacters, which we strip from the input) where
blocks, cells and <pre> whitespace are; one Python pass turns markers into newlines and tabs. No Python
code runs per element, which made it the fastest of the designs we measured (markers set from Python,
a Python tree walk, an lxml parser target; tools/bench_extract.py, numbers in docs/FETCH.md). libxml2 refuses
documents nested deeper than 2048 levels and silently drops the rest, so for those we fall back to the
standard library's streaming html.parser, which applies the same rules without building a tree.
"""

from __future__ import annotations

import html.parser
import queue
import re
from typing import Any

import lxml.html
from lxml import etree

BLOCK_TAGS = (
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details", "dialog",
    "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "frameset", "h1", "h2",
    "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "html", "legend", "li", "listing", "main", "menu",
    "nav", "ol", "optgroup", "option", "p", "plaintext", "pre", "section", "summary", "table", "tbody",
    "textarea", "tfoot", "thead", "tr", "ul", "xmp",
)  # fmt: skip
CELL_TAGS = ("td", "th")
PRE_TAGS = ("pre", "textarea", "listing", "plaintext", "xmp")
DROP_TAGS = ("script", "style", "template", "iframe", "object", "embed", "noembed", "noframes", "title")
_BLOCK_SET = frozenset(BLOCK_TAGS)
_PRE_SET = frozenset(PRE_TAGS)

# Noncharacters: never legitimately in text (we strip them from the input), kept by lxml.
NL = "\ufdd0"
CELL = "\ufdd1"
P_SP, P_NL, P_TAB = "\ufdd2", "\ufdd3", "\ufdd4"


def _pre_in(s: str) -> str:
    return s.replace("\r", "").replace(" ", P_SP).replace("\n", P_NL).replace("\t", P_TAB)


# Control characters libxml2 rejects, plus our markers if a page happens to contain them.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufdd0-\ufdd4\ufffe\uffff]")

MAX_LIBXML_DEPTH = 2048


def _parser() -> etree.HTMLParser:
    # huge_tree: without it libxml2 silently drops text nodes over 10 MB. lxml.html's parser gives
    # HtmlElement nodes, which trafilatura requires of a tree handed to it (content modes, maintext.py);
    # parsing costs the same, the element classes only matter where Python touches a node.
    return lxml.html.HTMLParser(
        encoding="utf-8", huge_tree=True, remove_comments=True, remove_pis=True, no_network=True
    )


def _finish(raw: str, title: str) -> str:
    """Markers -> layout: collapse whitespace, split lines, join cells, restore <pre> whitespace."""
    # str.split() collapses every Unicode whitespace run (incl. nbsp) in C: 3x faster than a regex.
    raw = " ".join(raw.split())
    lines = []
    if title:
        lines.append(title)
    for line in raw.split(NL):
        if CELL in line:
            cells = line.split(CELL)
            if not cells[0].strip(" "):
                cells = cells[1:]  # the row starts with a cell: no separator before it
            line = "\t".join(c.strip(" ") for c in cells).rstrip("\t")
        else:
            line = line.strip(" ")
        if line:
            lines.append(line)
    out = "\n".join(lines)
    # str.replace runs at memcpy speed; str.translate with a dict is ~50x slower per character.
    if P_SP in out or P_NL in out or P_TAB in out:
        out = out.replace(P_SP, " ").replace(P_NL, "\n").replace(P_TAB, "\t")
    return out


def _clean_title(t: str) -> str:
    return " ".join(t.split())


def parse_html(html: str) -> tuple[Any, bool]:
    """Parse a decoded HTML document once: ``(root or None, too_deep)``.

    ``too_deep`` is true when libxml2 refused levels past MAX_LIBXML_DEPTH (the tree then lacks them):
    full text then comes from the streaming parser instead.
    """
    html = _BAD_CHARS.sub("", html)
    if not html.strip():
        return None, False
    parser = _parser()
    root = etree.fromstring(html.encode("utf-8", "replace"), parser)
    return root, any("Excessive depth" in e.message for e in parser.error_log)


def html_to_text(html: bytes | str, noscript: str = "drop", keep_title: bool = True) -> str:
    """Plain text of an HTML/XHTML document, laid out as described in the module docstring.

    ``html`` should be str (decoded by shmfetch.charset); bytes are decoded the same way first.
    """
    if isinstance(html, bytes):
        from .charset import decode

        html = decode(html)[0]
    root, too_deep = parse_html(html)
    return tree_to_text(root, too_deep, html, noscript, keep_title)


def tree_to_text(
    root: Any, too_deep: bool, html: str, noscript: str = "drop", keep_title: bool = True
) -> str:
    """Full text of a tree from ``parse_html`` (``html`` is its source, for the streaming fallback)."""
    if too_deep:
        return _stream_to_text(_BAD_CHARS.sub("", html), noscript, keep_title)
    if root is None:
        return ""
    title = ""
    if keep_title:
        t = root.find("head/title")
        if t is None:
            t = root.find(".//title")
        if t is not None:
            title = _clean_title(etree.tostring(t, method="text", encoding=str, with_tail=False))
    try:
        result = _transform(root, noscript)
    except etree.XSLTApplyError:  # e.g. libxslt's template recursion limit: the stream has none
        return _stream_to_text(_BAD_CHARS.sub("", html), noscript, keep_title)
    raw = bytes(result).decode("utf-8", "replace")
    return _finish(raw, title)


def _stylesheet() -> str:
    drop = "|".join(DROP_TAGS + ("head",))
    blocks = "|".join(t for t in BLOCK_TAGS if t not in PRE_TAGS)
    pre = "|".join(PRE_TAGS)
    return f"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
<xsl:output method="text" encoding="UTF-8"/>
<xsl:param name="keep_noscript" select="0"/>
<xsl:template match="{drop}"/>
<xsl:template match="noscript"><xsl:if test="$keep_noscript=1"><xsl:apply-templates/></xsl:if></xsl:template>
<xsl:template match="{blocks}">{NL}<xsl:apply-templates/>{NL}</xsl:template>
<xsl:template match="br">{NL}</xsl:template>
<xsl:template match="td|th">{CELL}<xsl:apply-templates/></xsl:template>
<xsl:template match="{pre}">{NL}<xsl:apply-templates mode="pre"/>{NL}</xsl:template>
<xsl:template match="{drop}" mode="pre"/>
<xsl:template match="text()" mode="pre"><xsl:value-of
  select="translate(., ' &#10;&#9;&#13;', '{P_SP}{P_NL}{P_TAB}')"/></xsl:template>
</xsl:stylesheet>"""


# Compiled stylesheets not in use. lxml does not promise that an XSLT object is thread-safe, so each
# transform borrows one; there are only as many as transforms ever ran at once (2 in a worker, where
# fetch.py bounds extraction), not one per thread (~150 KiB each, 2.4 MiB for 16 threads).
_idle_xslt: queue.SimpleQueue[etree.XSLT] = queue.SimpleQueue()


def _transform(root: Any, noscript: str) -> Any:
    try:
        x = _idle_xslt.get_nowait()
    except queue.Empty:
        x = etree.XSLT(etree.XML(_stylesheet()))
    try:
        return x(root, keep_noscript="1" if noscript == "keep" else "0")
    finally:
        _idle_xslt.put(x)


class _Stream(html.parser.HTMLParser):
    """The same rules as html_to_text, applied to a stream of tags: no tree, no depth limit."""

    def __init__(self, noscript: str, keep_title: bool):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.title: list[str] = []
        self.keep_title = keep_title
        self.drop = set(DROP_TAGS) | {"head"} | ({"noscript"} if noscript == "drop" else set())
        self.dropping = 0
        self.drop_stack: list[str] = []
        self.in_title = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title":
            self.in_title += 1
        if tag in self.drop and tag != "head":
            self.drop_stack.append(tag)
            return
        if self.drop_stack:
            return
        if tag in _BLOCK_SET:
            self.out.append(NL)
        elif tag == "br":
            self.out.append(NL)
        elif tag in CELL_TAGS:
            self.out.append(CELL)
        if tag in _PRE_SET:
            self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self.in_title:
            self.in_title -= 1
        if self.drop_stack:
            if tag in self.drop_stack:
                while self.drop_stack and self.drop_stack.pop() != tag:
                    pass
            return
        if tag in _BLOCK_SET:
            self.out.append(NL)
        if tag in _PRE_SET and self.pre:
            self.pre -= 1

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        if self.drop_stack:
            return
        self.out.append(_pre_in(data) if self.pre else data)


def _stream_to_text(html: str, noscript: str, keep_title: bool) -> str:
    p = _Stream(noscript, keep_title)
    p.feed(html)
    p.close()
    title = _clean_title("".join(p.title)) if keep_title else ""
    return _finish("".join(p.out), title)


def xml_to_text(xml: str | bytes) -> str:
    """Text content of an XML document (RSS, Atom, ...): each element's text on its own line.

    Entities are not expanded and nothing is fetched (no XXE); recover=True accepts broken feeds.
    """
    if isinstance(xml, str):
        xml = _BAD_CHARS.sub("", xml).encode("utf-8", "replace")
        # The XML declaration may name the original charset; we hand libxml2 UTF-8.
        xml = re.sub(rb"^\s*<\?xml[^>]*\?>", b"", xml, count=1)
    parser = etree.XMLParser(
        recover=True,
        huge_tree=True,
        resolve_entities=False,
        no_network=True,
        remove_comments=True,
        remove_pis=True,
        encoding="utf-8",
    )
    root = etree.fromstring(xml, parser) if xml.strip() else None
    if root is None:
        return ""
    lines = (" ".join(t.split()) for t in root.itertext())
    return "\n".join(ln for ln in lines if ln)
