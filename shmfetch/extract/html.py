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

How, in two steps so that other passes can share the tree (parse once):

* ``parse_html(body, encoding)``: lxml parses the body bytes into a tree in C. UTF-8 bytes (most of the
  web) go to libxml2 as they are, with control bytes deleted; other encodings are decoded with the codec
  shmfetch.charset chose and handed over as UTF-8.
* ``tree_to_text(root)``: a small XSLT stylesheet (libxslt, also C) drops the unwanted elements and writes
  the text with marker characters (Unicode noncharacters, which we strip from the input) where blocks,
  cells and <pre> whitespace are; whole-string passes turn markers into newlines and tabs.

No Python code runs per element or per line, which made it the fastest of the designs we measured
(markers set from Python, a Python tree walk, an lxml parser target; tools/bench_extract.py, numbers in
docs/FETCH.md). libxml2 refuses documents nested deeper than 2048 levels and silently drops the rest
(``parse_html`` raises TooDeep), so for those ``html_to_text`` falls back to the standard library's
streaming html.parser, which applies the same rules without building a tree.
"""

from __future__ import annotations

import html.parser
import queue
import re
import threading
from typing import Any

import lxml.html
from lxml import etree

from ..fetch.charset import choose, decode_as

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
BLOCK_SET = frozenset(BLOCK_TAGS)
_PRE_SET = frozenset(PRE_TAGS)

# Noncharacters: never legitimately in text (we strip them from the input), kept by lxml.
NL = "\ufdd0"
CELL = "\ufdd1"
P_SP, P_NL, P_TAB = "\ufdd2", "\ufdd3", "\ufdd4"


def _pre_in(s: str) -> str:
    return s.replace("\r", "").replace(" ", P_SP).replace("\n", P_NL).replace("\t", P_TAB)


# Control characters we never pass on, plus our markers if a page happens to contain them.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufdd0-\ufdd4\ufffe\uffff]")
_CTRL_BYTES = bytes((*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)))  # the same, as UTF-8 bytes
_NONCHAR_UTF8 = re.compile(b"\xef\xb7[\x90-\x94]|\xef\xbf[\xbe\xbf]")  # U+FDD0-FDD4, U+FFFE/FFFF

MAX_LIBXML_DEPTH = 2048

_local = threading.local()


class TooDeep(Exception):
    """libxml2 stopped at its nesting limit: the tree lacks the rest of the document."""


def html_parser() -> etree.HTMLParser:
    """This thread's parser (an lxml parser must not be shared between threads)."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        # huge_tree: without it libxml2 silently drops text nodes over 10 MB. collect_ids=False and
        # default_doctype=False skip an id hash table and a DOCTYPE node that no text pass reads.
        # lxml.html's parser gives HtmlElement nodes, which trafilatura requires of a tree handed to it
        # (content modes, maintext.py); parsing costs the same, the classes matter only where Python
        # touches a node.
        parser = _local.parser = lxml.html.HTMLParser(
            encoding="utf-8", huge_tree=True, remove_comments=True, remove_pis=True, no_network=True,
            collect_ids=False, default_doctype=False,
        )  # fmt: skip
    return parser


def _utf8_markup(body: bytes | bytearray, encoding: str, skip: int) -> bytes | bytearray | None:
    """``body`` ready for libxml2 as UTF-8 without decoding it to str, or None if it needs the str path.

    Only for valid UTF-8: control bytes are single bytes there, so deleting them is the str path's
    cleaning (a legacy encoding may use them, e.g. ESC in ISO-2022-JP), and validity means libxml2's own
    error recovery never decides what a bad byte becomes.
    """
    if encoding != "utf-8":
        return None
    if skip:
        body = body[skip:]
    if not body.isascii():
        try:
            str(body, "utf-8")
        except UnicodeDecodeError:
            return None
        if b"\xef" in body and _NONCHAR_UTF8.search(body):
            return None
    return body.translate(None, _CTRL_BYTES)


def _markup_bytes(body: bytes | bytearray, encoding: str, skip: int) -> bytes | bytearray:
    """UTF-8 markup libxml2 can parse, cleaned of control characters and of our markers."""
    fast = _utf8_markup(body, encoding, skip)
    if fast is not None:
        return fast
    return _BAD_CHARS.sub("", decode_as(body, encoding, skip)).encode("utf-8", "replace")


def parse_html(body: bytes | bytearray, encoding: str = "utf-8", skip: int = 0) -> Any:
    """The lxml tree of an HTML document given as bytes in ``encoding`` (a Python codec name, as
    shmfetch.charset.choose returns it; ``skip`` leading BOM bytes are ignored). None for an empty page.

    Parse once, read many times: ``tree_to_text`` and other passes (trafilatura) take this tree.
    Raises TooDeep when the document nests deeper than libxml2 goes (MAX_LIBXML_DEPTH).
    """
    markup = _markup_bytes(body, encoding, skip)
    if not markup or markup.isspace():
        return None
    parser = html_parser()
    root = etree.fromstring(markup, parser)
    if any("Excessive depth" in e.message for e in parser.error_log):
        raise TooDeep("document nested deeper than libxml2 parses")
    return root


def tree_to_text(root: Any, noscript: str = "drop", keep_title: bool = True) -> str:
    """Plain text of a tree from ``parse_html``, laid out as described in the module docstring.

    Raises etree.XSLTApplyError when libxslt gives up (its template recursion limit).
    """
    if root is None:
        return ""
    title = ""
    if keep_title:
        t = root.find("head/title")
        if t is None:
            t = root.find(".//title")
        if t is not None:
            title = _clean_title(etree.tostring(t, method="text", encoding=str, with_tail=False))
    raw = str(_transform(root, noscript))
    return finish_text(raw, title)


def finish_text(raw: str, title: str) -> str:
    """Markers -> layout: collapse whitespace, split lines, join cells, restore <pre> whitespace.

    Whole-string passes in C (str.split, str.replace): a Python loop over the lines, or a regex over the
    text, cost as much as the XSLT pass on a news page.
    """
    # str.split() collapses every Unicode whitespace run (incl. nbsp) in C: 3x faster than a regex. After
    # it a marker has at most one space on each side, and dropping those strips every line and cell.
    out = " ".join(raw.split())
    if CELL in out:
        out = f"{NL}{out}{NL}".replace(" " + CELL, CELL).replace(CELL + " ", CELL)
        out = out.replace(NL + CELL, NL)  # a row that starts with a cell: no tab before it
        while CELL + NL in out or CELL + " " + NL in out:  # no tabs for empty cells closing a row
            out = out.replace(CELL + NL, NL).replace(CELL + " " + NL, NL)
    # Lines stripped (of the one space left at each end), empty ones dropped: C loops, no Python one.
    out = "\n".join(filter(None, map(str.strip, out.split(NL))))
    if CELL in out:
        out = out.replace(CELL, "\t")  # after the strip, which would take a leading tab
    if title:
        out = f"{title}\n{out}" if out else title
    # str.replace runs at memcpy speed; str.translate with a dict is ~50x slower per character.
    if P_SP in out or P_NL in out or P_TAB in out:
        out = out.replace(P_SP, " ").replace(P_NL, "\n").replace(P_TAB, "\t")
    return out


def _clean_title(t: str) -> str:
    return " ".join(t.split())


def html_to_text(
    html: bytes | bytearray | str,
    noscript: str = "drop",
    keep_title: bool = True,
    encoding: str | None = None,
) -> str:
    """Plain text of an HTML/XHTML document, laid out as described in the module docstring.

    Bytes are parsed as they are, in ``encoding`` (a Python codec name) or, without one, in the encoding
    shmfetch.charset chooses for them; a str is parsed as its UTF-8.
    """
    if isinstance(html, str):
        body, encoding, skip = html.encode("utf-8", "replace"), "utf-8", 0
    elif encoding is None:
        body = html
        encoding, skip = choose(html, None)
    else:
        body, skip = html, 0
    try:
        return tree_to_text(parse_html(body, encoding, skip), noscript, keep_title)
    except (TooDeep, etree.XSLTApplyError):
        return text_without_tree(body, encoding, skip, noscript, keep_title)


def text_without_tree(
    body: bytes | bytearray, encoding: str, skip: int = 0, noscript: str = "drop", keep_title: bool = True
) -> str:
    """The text of a page libxml2 cannot make a tree of (nested too deep) or libxslt gives up on: the
    stream applies the same rules without a tree, so it has no depth or recursion limit."""
    return stream_to_text(_BAD_CHARS.sub("", decode_as(body, encoding, skip)), noscript, keep_title)


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
        if tag in BLOCK_SET:
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
        if tag in BLOCK_SET:
            self.out.append(NL)
        if tag in _PRE_SET and self.pre:
            self.pre -= 1

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        if self.drop_stack:
            return
        self.out.append(_pre_in(data) if self.pre else data)


def stream_to_text(html: str, noscript: str, keep_title: bool) -> str:
    p = _Stream(noscript, keep_title)
    p.feed(html)
    p.close()
    title = _clean_title("".join(p.title)) if keep_title else ""
    return finish_text("".join(p.out), title)


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
