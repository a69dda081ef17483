"""HTML to plain text with lxml. (Minimal version; issue 3 replaces it with the full extractor.)"""

from __future__ import annotations

import re

import lxml.html

_WS = re.compile(r"[ \t\r\f\v]+")


def html_to_text(html: bytes | str, noscript: str = "drop") -> str:
    """Plain text of an HTML document: scripts and styles removed, blocks on their own lines."""
    if not html or not html.strip():
        return ""
    doc = lxml.html.document_fromstring(html)
    for bad in doc.xpath("//script|//style|//template|//head/meta|//head/link"):
        bad.drop_tree()
    text = doc.text_content()
    lines = (_WS.sub(" ", ln).strip() for ln in text.splitlines())
    return "\n".join(ln for ln in lines if ln)
