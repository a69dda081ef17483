"""The crawl tests' site: a known link graph over three origins, served by the one test origin.

    A  = Origin("127.0.0.1")    the site a crawl starts on
    B  = Origin("127.0.0.2")    another host
    A2 = Origin("127.0.0.1")    the same address on another port: another host, the same "domain"

``serve(a, b, a2)`` installs every page with ``Origin.respond`` (exact paths, query included). Links
are written as in ``PAGES`` ("{B}" and friends stand for the other origins' base URLs); the graph has
cycles, links back to the seed, a fragment variant (/b#top) and a query-order variant (/c?y=2&x=1) of
one page, links to the other hosts, a robots.txt on A disallowing /private/ and naming a sitemap index
(/sitemap-index.xml -> /sitemap-pages.xml.gz, gzipped, listing /hidden, which no page links to),
a /sitemap.xml on B (no robots.txt there), a redirect out of scope (A/out -> B/y) and one into it
(B/in -> A/b3), and a non-HTML asset (/logo.png). ``fetched(o)`` is the
set of paths an origin served (its own request log), robots.txt aside.
"""

from __future__ import annotations

import gzip
import html

from .origin import Origin

PAGES: dict[str, dict[str, list[str]]] = {
    "A": {
        "/": [
            "/a",
            "/b",
            "/b#top",
            "/c?x=1&y=2",
            "/logo.png",
            "/private/p",
            "/docs/",
            "{B}/x",
            "{A2}/z",
            "/",
        ],
        "/a": ["/", "/a2", "/c?y=2&x=1", "/out"],
        "/b": ["/a", "/b2", "{B}/in"],
        "/c?x=1&y=2": ["/c2"],
        "/c?y=2&x=1": ["/c2"],
        "/docs/": ["/docs/one", "/docs/two", "/a"],
        "/docs/one": ["/docs/two", "/"],
        "/docs/two": [],
        "/a2": ["/a3", "/a"],
        "/b2": ["/b3"],
        "/c2": [],
        "/a3": ["/a4"],
        "/b3": ["/"],
        "/a4": [],
        "/private/p": ["/private/q"],
        "/private/q": [],
        "/hidden": ["/hidden2"],  # listed by a sitemap only
        "/hidden2": [],
    },
    "B": {"/x": ["/x2", "{A}/"], "/x2": [], "/y": ["/y2"], "/y2": []},
    "A2": {"/z": ["/z2"], "/z2": []},
}
REDIRECTS: dict[str, dict[str, str]] = {"A": {"/out": "{B}/y"}, "B": {"/in": "{A}/b3"}}
ROBOTS_A = "User-agent: *\nDisallow: /private/\n\nSitemap: {A}/sitemap-index.xml\n"
SITEMAPS_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
SITEMAP_INDEX = (
    f"<?xml version='1.0' encoding='UTF-8'?><sitemapindex xmlns='{SITEMAPS_NS}'>"
    "<sitemap><loc>{A}/sitemap-pages.xml.gz</loc></sitemap></sitemapindex>"
)
URLSET = f"<?xml version='1.0' encoding='UTF-8'?><urlset xmlns='{SITEMAPS_NS}'>" + "{entries}</urlset>"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)
HTML = {"Content-Type": "text/html; charset=utf-8"}


def page_html(path: str, links: list[str], bases: dict[str, str]) -> bytes:
    anchors = "".join(
        f'<li><a href="{html.escape(link.format(**bases))}">{i}</a></li>' for i, link in enumerate(links)
    )
    return (f"<!DOCTYPE html><html><head><title>{html.escape(path)}</title></head><body>"
            f"<h1>Page {html.escape(path)}</h1><ul>{anchors}</ul></body></html>").encode()  # fmt: skip


def urlset(*urls: str) -> bytes:
    return URLSET.format(entries="".join(f"<url><loc>{html.escape(u)}</loc></url>" for u in urls)).encode()


def serve(a: Origin, b: Origin, a2: Origin) -> None:
    """Install the site on the three origins."""
    origins = {"A": a, "B": b, "A2": a2}
    bases = {name: o.url("") for name, o in origins.items()}
    for name, pages in PAGES.items():
        for path, links in pages.items():
            origins[name].respond(path, 200, page_html(path, links, bases), HTML)
    for name, redirects in REDIRECTS.items():
        for path, target in redirects.items():
            origins[name].respond(path, 302, b"", {"Location": target.format(**bases)})
    a.respond("/robots.txt", 200, ROBOTS_A.format(**bases).encode(), {"Content-Type": "text/plain"})
    xml = {"Content-Type": "application/xml"}
    a.respond("/sitemap-index.xml", 200, SITEMAP_INDEX.format(**bases).encode(), xml)
    pages = gzip.compress(urlset(bases["A"] + "/hidden"))
    a.respond("/sitemap-pages.xml.gz", 200, pages, {"Content-Type": "application/gzip"})
    b.respond("/sitemap.xml", 200, urlset(bases["B"] + "/y2"), xml)
    a.respond("/logo.png", 200, PNG, {"Content-Type": "image/png"})


def fetched(o: Origin) -> list[str]:
    """The paths ``o`` served, in order, robots.txt aside (a list: a page fetched twice shows twice)."""
    return [path for path, _start, _end in o.log if path != "/robots.txt"]
