"""A crawl's sitemap fetches, read in the worker: robots.txt's ``Sitemap:`` lines, and sitemaps (XML, or
gzipped XML) and sitemap indexes (sitemaps.org protocol), parsed with lxml.

The URLs come back as the Outcome's ``links``: ``{"url", "sitemap": true}`` for another sitemap to read
(robots.txt's lines, a sitemap index's entries), ``{"url", "internal": false}`` for a page. The master's
crawl (shmfetch/crawl) decides what to do with them. The body is already within ``[fetch] max_bytes`` /
``max_decoded_bytes`` (Content-Encoding decoded by the body reader); a gzipped file served as such
(``.xml.gz``, ``application/gzip``) is inflated here within ``max_decoded_bytes`` too.
"""

from __future__ import annotations

import zlib
from typing import Any

from lxml import etree

MAX_ENTRIES = 50_000  # the protocol's own limit per sitemap file
GZIP_MAGIC = b"\x1f\x8b"


def inflate(data: bytes | bytearray, limit: int) -> bytes:
    """``data`` as it is, or inflated if it is gzip; ValueError past ``limit`` bytes or if corrupt."""
    if not data.startswith(GZIP_MAGIC):
        return bytes(data)
    d = zlib.decompressobj(31)
    try:
        out = d.decompress(bytes(data), limit + 1)
    except zlib.error as e:
        raise ValueError(f"corrupt gzip: {e}") from None
    if len(out) > limit:
        raise ValueError(f"gzipped sitemap inflates past max_decoded_bytes={limit}")
    if not d.eof:
        raise ValueError("corrupt gzip: the stream is cut short")
    return out


def robots_sitemaps(data: bytes) -> list[dict[str, Any]]:
    """The ``Sitemap:`` lines of a robots.txt (RFC 9309 2.4: any record may hold them)."""
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        value = value.split("#", 1)[0].strip()
        if sep and key.strip().lower() == "sitemap" and value.startswith(("http://", "https://")):
            out.append({"url": value, "sitemap": True})
    return out[:MAX_ENTRIES]


def sitemap_entries(data: bytes) -> list[dict[str, Any]]:
    """The ``<loc>`` entries of a sitemap (pages) or a sitemap index (sitemaps); [] for anything else."""
    # A parser per call: an lxml parser is not to be shared between threads. No entities, no network.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True, huge_tree=False)
    root = etree.fromstring(data, parser)
    if root is None:
        return []
    kind = etree.QName(root).localname
    if kind == "sitemapindex":
        item, entry = "sitemap", {"sitemap": True}
    elif kind == "urlset":
        item, entry = "url", {"internal": False}
    else:
        return []
    locs = root.xpath(f"./*[local-name()='{item}']/*[local-name()='loc']/text()")
    return [{"url": loc.strip(), **entry} for loc in locs[:MAX_ENTRIES] if loc.strip()]
