"""Extraction rules, robustness against hostile markup (with time bounds), and XML text."""

from __future__ import annotations

import random
import time

import pytest

from shmfetch.config import FetchConfig, SecurityConfig
from shmfetch.extract.html import (
    TooDeep,
    html_to_text,
    parse_html,
    stream_to_text,
    tree_to_text,
    xml_to_text,
)
from shmfetch.extract.page import page_fetcher
from shmfetch.testing.origin import EXTRACT_CASES, NOSCRIPT_KEEP_TEXT, page_html, page_text

from .helpers import origin_fixture  # noqa: F401 (origin is a fixture)


@pytest.mark.parametrize("name", list(EXTRACT_CASES))
def test_rule(name):
    html, expected = EXTRACT_CASES[name]
    assert html_to_text(html) == expected


@pytest.mark.parametrize("name", list(EXTRACT_CASES))
def test_streaming_fallback_applies_the_same_rules(name):
    html, expected = EXTRACT_CASES[name]
    assert stream_to_text(html, "drop", True) == expected


def test_rules_over_http(origin):
    fetcher = page_fetcher(FetchConfig(timeout=5.0), SecurityConfig(allow_networks=("127.0.0.1/32",)))
    for name, (_html, expected) in EXTRACT_CASES.items():
        out = fetcher.fetch(origin.url(f"/extract/{name}"))
        assert (name, out.ok, out.text) == (name, True, expected)
    fetcher.close()


def test_noscript_keep():
    html = EXTRACT_CASES["noscript"][0]
    assert html_to_text(html, noscript="keep") == NOSCRIPT_KEEP_TEXT
    assert stream_to_text(html, "keep", True) == NOSCRIPT_KEEP_TEXT


def test_noscript_keep_via_config(origin):
    fetcher = page_fetcher(FetchConfig(noscript="keep"), SecurityConfig(allow_networks=("127.0.0.1/32",)))
    assert fetcher.fetch(origin.url("/extract/noscript")).text == NOSCRIPT_KEEP_TEXT


def test_title_is_first_line_and_optional():
    html = "<html><head><title>The title</title></head><body><p>Body</p></body></html>"
    assert html_to_text(html) == "The title\nBody"
    assert html_to_text(html, keep_title=False) == "Body"


def test_generated_pages(origin):
    for size in (500, 10_000, 300_000):
        assert html_to_text(page_html(size)) == page_text(size)


def test_bytes_input_is_decoded():
    assert html_to_text("<p>Grüße</p>".encode()) == "Grüße"


# -- parse once, read many times: the tree and the text as separate steps ---------------------------------


@pytest.mark.parametrize("name", list(EXTRACT_CASES))
def test_parse_then_text_is_html_to_text(name):
    html, expected = EXTRACT_CASES[name]
    assert tree_to_text(parse_html(html.encode(), "utf-8")) == expected


def test_one_tree_read_twice():
    root = parse_html(page_html(20_000).encode(), "utf-8")
    assert tree_to_text(root) == tree_to_text(root) == page_text(20_000)
    assert root.find("head/title").text == "Test page"


@pytest.mark.parametrize("enc", ["cp1251", "koi8-r", "cp932", "gb18030", "utf-16-le"])
def test_parse_bytes_in_their_encoding(enc):
    text = "Привет, мир" if enc in ("cp1251", "koi8-r") else "東京 北京"
    body = f"<html><head><title>T</title></head><body><p>{text}</p></body></html>".encode(enc)
    assert tree_to_text(parse_html(body, enc)) == f"T\n{text}"
    assert html_to_text(body, encoding=enc) == f"T\n{text}"


def test_parse_skips_the_bom():
    body = b"\xef\xbb\xbf<p>caf\xc3\xa9</p>"
    assert tree_to_text(parse_html(body, "utf-8", skip=3)) == "café"


def test_utf8_bytes_are_cleaned_like_text():
    # Control characters and our marker characters never reach the text, on the bytes path as on the str one.
    body = "<p>a\x01b\x00c\x1fd\ufdd0e\ufdd1f\uffffg</p><table><tr><td>x</td><td>y</td></tr></table>"
    assert html_to_text(body.encode(), encoding="utf-8") == html_to_text(body) == "abcdefg\nx\ty"


def test_invalid_utf8_is_replaced_as_in_python():
    body = b"<p>caf\xe9 ok \xc3\xa9</p>"
    assert html_to_text(body, encoding="utf-8") == "caf\ufffd ok é"


def test_empty_and_blank_bodies_have_no_tree():
    assert parse_html(b"", "utf-8") is None
    assert parse_html(b" \r\n\t ", "utf-8") is None
    assert tree_to_text(None) == ""


def test_too_deep_for_a_tree_is_reported():
    with pytest.raises(TooDeep):
        parse_html(("<div>" * 5000 + "x").encode(), "utf-8")


# -- robustness: each with a time bound ----------------------------------------------------------------


def _bounded(fn, limit: float):
    t = time.monotonic()
    result = fn()
    took = time.monotonic() - t
    assert took < limit, f"took {took:.2f}s"
    return result


def test_deep_nesting_100k():
    html = "<div>" * 100_000 + "deep" + "</div>" * 100_000 + "<p>after</p>"
    assert _bounded(lambda: html_to_text(html), 15.0) == "deep\nafter"


def test_deep_unclosed_nesting_100k():
    html = "<p>start</p>" + "<span><b>" * 50_000 + "x"
    assert _bounded(lambda: html_to_text(html), 15.0) == "start\nx"


def test_huge_single_text_node():
    word = "lorem "
    html = "<p>" + word * (2_000_000) + "</p>"  # 12 MB, above libxml2's default 10 MB node limit
    text = _bounded(lambda: html_to_text(html), 15.0)
    assert len(text) == len(word) * 2_000_000 - 1 and text.startswith("lorem lorem")


def test_huge_pre_text_node():
    html = "<pre>" + "a  b\n" * 500_000 + "</pre>"
    text = _bounded(lambda: html_to_text(html), 15.0)
    assert text == "a  b\n" * 500_000


@pytest.mark.parametrize(
    "html",
    [
        "<", "<<<<>>>>", "</p></p></div>", "<p", "<!--", "<![CDATA[x", "<script>never closed",
        "<style>", "<template><p>x", "&#xFFFFFFFF; &#0; &bogus; &", "\x00\x01\x02<p>ctl</p>",
        "<table><td><table><td><table>", "<svg><foreignObject><p>x</svg>", "<?xml version='1.0'?>",
        "<html><html><body><body>", "\ufdd0\ufdd1 markers in input", "<title>", "<pre>",
    ],
)  # fmt: skip
def test_broken_markup_never_raises(html):
    text = _bounded(lambda: html_to_text(html), 2.0)
    assert isinstance(text, str)
    assert "\ufdd0" not in text and "\ufdd1" not in text


def test_random_markup_fuzz():
    rng = random.Random(1234)
    pieces = ["<p>", "</p>", "<div>", "</div>", "<td>", "<tr>", "<table>", "<br>", "<pre>", "</pre>", "<script>",
              "</script>", "<!--", "-->", "&amp;", "&nbsp;", "text", " ", "\n", "<b>", "</i>", "<", ">", "\x00"]  # fmt: skip
    t = time.monotonic()
    for _ in range(300):
        doc = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 200)))
        assert isinstance(html_to_text(doc), str)
    assert time.monotonic() - t < 10.0


# -- XML -------------------------------------------------------------------------------------------------


def test_xml_text():
    assert xml_to_text("<a>one<b> two </b><c/>three</a>") == "one\ntwo\nthree"


def test_xml_external_entities_not_resolved():
    xml = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>a&e;b</x>'
    text = xml_to_text(xml)
    assert "root:" not in text


def test_xml_billion_laughs_bounded():
    ents = '<!ENTITY a0 "lol">' + "".join(
        f'<!ENTITY a{i} "{("&a" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    xml = f'<?xml version="1.0"?><!DOCTYPE x [{ents}]><x>&a9;</x>'
    text = _bounded(lambda: xml_to_text(xml), 5.0)
    assert len(text) < 1000


def test_xml_broken_and_empty():
    assert xml_to_text("") == ""
    assert xml_to_text("<a><b>unclosed") == "unclosed"
