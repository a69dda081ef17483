"""A crawl's sitemap reading in the worker (shmfetch/extract/sitemap.py): robots.txt's Sitemap: lines,
sitemaps and sitemap indexes with lxml, gzip within its bound."""

from __future__ import annotations

import gzip

import pytest

from shmfetch.extract.sitemap import inflate, robots_sitemaps, sitemap_entries

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def test_robots_txt_sitemap_lines_anywhere_any_case() -> None:
    body = (
        b"User-agent: *\nDisallow: /x\nSitemap: https://a.example/s1.xml\n"
        b"sitemap:http://a.example/s2.xml.gz # comment\nSITEMAP: /relative.xml\nAllow: /\n"
    )
    assert robots_sitemaps(body) == [
        {"url": "https://a.example/s1.xml", "sitemap": True},
        {"url": "http://a.example/s2.xml.gz", "sitemap": True},
    ]


def test_urlset_gives_pages_and_index_gives_sitemaps() -> None:
    urlset = (
        f"<urlset xmlns='{NS}' xmlns:image='http://www.google.com/schemas/sitemap-image/1.1'>"
        "<url><loc> http://a.example/one </loc><image:image><image:loc>http://a.example/i.png</image:loc>"
        "</image:image></url><url><loc>http://a.example/two?a=1&amp;b=2</loc></url></urlset>"
    ).encode()
    assert sitemap_entries(urlset) == [
        {"url": "http://a.example/one", "internal": False},
        {"url": "http://a.example/two?a=1&b=2", "internal": False},
    ]
    index = f"<sitemapindex xmlns='{NS}'><sitemap><loc>http://a.example/s.xml</loc></sitemap></sitemapindex>"
    assert sitemap_entries(index.encode()) == [{"url": "http://a.example/s.xml", "sitemap": True}]
    assert sitemap_entries(b"<rss><channel><link>http://a.example/</link></channel></rss>") == []


def test_entities_are_not_expanded() -> None:
    evil = (
        b"<?xml version='1.0'?><!DOCTYPE u [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
        b"<urlset xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'><url><loc>&x;</loc></url></urlset>"
    )
    assert all("root:" not in e["url"] for e in sitemap_entries(evil))


def test_gzip_is_inflated_within_its_bound() -> None:
    body = b"<urlset/>" + b" " * 10_000
    assert inflate(gzip.compress(body), 1 << 20) == body
    assert inflate(body, 10) == body  # not gzip: as it is
    with pytest.raises(ValueError, match="max_decoded_bytes"):
        inflate(gzip.compress(bytes(1 << 20)), 1000)
    with pytest.raises(ValueError, match="corrupt"):
        inflate(b"\x1f\x8b\x08\x00garbage", 1000)
