"""A page's declared metadata and its links, read from the tree the worker already parsed.

Metadata (every HTML result carries these; a value the page does not declare is None):

* ``title``: ``og:title``, else the ``<title>``, whitespace collapsed;
* ``lang``: ``<html lang>``, else ``<meta http-equiv="content-language">``;
* ``canonical_url``: ``<link rel="canonical">``, resolved like a link (below);
* ``description``: ``<meta name="description">``, else ``og:description``;
* ``site_name``: ``og:site_name``, else ``<meta name="application-name">``;
* ``published``: only on request (``metadata=true``): htmldate's reading of the page (meta tags, JSON-LD,
  ``<time>``, URL), ``YYYY-MM-DD``. Cheap when the page declares its date in a meta tag (0.1 ms), but on a
  page that does not, htmldate deep-copies the tree and searches it: 18 ms a page on loadgen's 93 KB pages,
  four times the full-text extraction (docs/BENCHMARKS.md, "Content modes"). So only on request.

These are what the page states about itself, so a handful of XPath lookups read them; no heuristics.

Links (``links=true``): the ``href`` of every ``<a>`` and ``<area>``, resolved against the head's ``<base href>``
(itself resolved against the final URL) or the final URL, fragment removed, http(s) only, deduplicated
in document order, each marked ``internal`` (same host as the final URL) or not; at most ``max_links``,
with ``links_truncated`` set when there were more.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterable
from typing import Any

from lxml import etree

from ..protocol import METADATA_FIELDS

_HREFS = etree.XPath("//a/@href | //area/@href", smart_strings=False)


def _clean(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    return value or None


class _Head:
    """The declarations among the ``<head>``'s children, read in one pass.

    Only the head's own children: an XPath from the root (``//meta``) walks the whole document, which on
    a 90 KB page cost 3 ms, more than half of the full-text extraction itself; the head holds a few dozen
    elements. libxml2 keeps ``<meta>``/``<link>``/``<title>``/``<base>`` there when the page puts them there.
    """

    def __init__(self, root: Any):
        self.metas: dict[str, str] = {}  # first non-empty content per lower-cased property/name/http-equiv
        self.title: str | None = None
        self.canonical: str | None = None
        self.base: str | None = None
        head = root.find("head")
        for el in head if head is not None else ():
            tag = el.tag
            if tag == "meta":
                key = el.get("property") or el.get("name") or el.get("http-equiv")
                content = _clean(el.get("content"))
                if key and content:
                    self.metas.setdefault(key.strip().lower(), content)
            elif tag == "link" and self.canonical is None:
                if "canonical" in (el.get("rel") or "").lower().split() and el.get("href"):
                    self.canonical = el.get("href")
            elif tag == "title" and self.title is None:
                self.title = _clean(el.text_content() if hasattr(el, "text_content") else el.text)
            elif tag == "base" and self.base is None and el.get("href"):
                self.base = el.get("href")


def base_url(final_url: str, head: _Head) -> str:
    """The URL relative links resolve against: the head's ``<base href>`` resolved against the final URL."""
    base = head.base
    if base:
        try:
            return urllib.parse.urljoin(final_url, base.strip())
        except ValueError:
            pass
    return final_url


def _absolute(base: str, href: str) -> str | None:
    """``href`` resolved against ``base``, without its fragment; None unless it is http(s)."""
    try:
        url = urllib.parse.urljoin(base, href.strip())
        url = urllib.parse.urldefrag(url).url
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def metadata(
    root: Any, final_url: str, published: bool = False, head: _Head | None = None
) -> dict[str, str | None]:
    """The METADATA_FIELDS of a parsed page (None where the page declares nothing)."""
    if root is None:
        return dict.fromkeys(METADATA_FIELDS)
    head = head or _Head(root)
    metas = head.metas
    lang = root.get("lang") if root.tag == "html" else None
    canonical = head.canonical
    return {
        "title": metas.get("og:title") or head.title,
        "lang": _clean(lang) or metas.get("content-language"),
        "canonical_url": _absolute(base_url(final_url, head), canonical) if canonical else None,
        "description": metas.get("description") or metas.get("og:description"),
        "site_name": metas.get("og:site_name") or metas.get("application-name"),
        "published": published_date(root, final_url) if published else None,
    }


def published_date(root: Any, final_url: str) -> str | None:
    """htmldate's publication date of the page (it copies the tree, ours is left as it was)."""
    import htmldate  # imported on first use: most workers never need it

    logging.getLogger("htmldate").setLevel(logging.ERROR)
    try:
        return htmldate.find_date(root, extensive_search=False, original_date=True, url=final_url)
    except Exception:  # htmldate raises assorted errors on odd dates; a missing date is not a failure
        return None


def links(
    root: Any, final_url: str, cap: int, head: _Head | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """``([{"url", "internal"}...], truncated)``: the page's links as described in the module docstring."""
    if root is None:
        return [], False
    return link_list(_HREFS(root), final_url, cap, base_url(final_url, head or _Head(root)))


def link_list(
    hrefs: Iterable[str], final_url: str, cap: int, base: str | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """``(links, truncated)`` of ``hrefs`` (an HTML page's, a PDF's link annotations) resolved against
    ``base`` (default: the final URL): http(s) only, fragment removed, deduplicated, at most ``cap``."""
    base = base or final_url
    host = (urllib.parse.urlsplit(final_url).hostname or "").lower()
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for href in hrefs:
        url = _absolute(base, href)
        if url is None or url in seen:
            continue
        if len(out) >= cap:
            return out, True
        seen.add(url)
        try:
            internal = (urllib.parse.urlsplit(url).hostname or "").lower() == host
        except ValueError:
            continue
        out.append({"url": url, "internal": internal})
    return out, False


def page_fields(
    root: Any, final_url: str, published: bool, with_links: bool, max_links: int
) -> dict[str, Any]:
    """The Outcome fields a parsed page fills: its metadata, and its links when asked."""
    head = _Head(root) if root is not None else None  # read once for both
    fields: dict[str, Any] = metadata(root, final_url, published, head)
    if with_links:
        fields["links"], fields["links_truncated"] = links(root, final_url, max_links, head)
    return fields
