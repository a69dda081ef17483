"""Charset order (BOM, HTTP charset, meta, detection) over real HTTP, and decode() on its own."""

from __future__ import annotations

import pytest

from shmfetch.config import FetchConfig, SecurityConfig
from shmfetch.extract.html import html_to_text
from shmfetch.extract.page import page_fetcher
from shmfetch.fetch import charset
from shmfetch.testing.origin import SAMPLES, charset_page

from .helpers import origin_fixture  # noqa: F401 (origin is a fixture)


@pytest.fixture(scope="module")
def f():
    fetcher = page_fetcher(FetchConfig(timeout=5.0, retries=0), SecurityConfig(allow_networks=("127.0.0.1/32",)))
    yield fetcher
    fetcher.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["header", "meta", "none"])
@pytest.mark.parametrize("enc", list(SAMPLES))
def test_page_in_encoding(f, origin, enc, mode):
    out = f.fetch(origin.url(f"/charset?enc={enc}&mode={mode}"))
    assert (out.ok, out.text) == (True, "Title\n" + SAMPLES[enc])


@pytest.mark.parametrize("enc", ["utf-16-le", "utf-16-be"])
def test_utf16_with_bom(f, origin, enc):
    out = f.fetch(origin.url(f"/charset?enc={enc}&mode=none&bom=1"))
    assert out.text == "Title\n" + SAMPLES[enc]


def test_bom_beats_http_charset():
    body = b"\xef\xbb\xbf<p>caf\xc3\xa9</p>"
    assert charset.choose(body, "windows-1251") == ("utf-8", 3)
    assert charset.decode(body, "windows-1251")[0] == "<p>café</p>"


def test_http_charset_beats_meta():
    body = '<meta charset="windows-1251"><p>Привет мир</p>'.encode("koi8-r")
    assert charset.decode(body, "koi8-r")[1] == "koi8-r"
    assert "Привет мир" in charset.decode(body, "koi8-r")[0]


def test_meta_beats_detection():
    # Valid UTF-8 bytes, but the page says windows-1252: the declaration wins.
    body = "<meta charset=windows-1252><p>cafÃ©</p>".encode("cp1252")
    assert charset.decode(body, None)[0].endswith("<p>cafÃ©</p>")


def test_undeclared_html_is_not_latin1(f, origin):
    out = f.fetch(origin.url("/echo-text?t=<p>naïve café — 東京</p>&ctype=text/html"))
    assert out.text == "naïve café — 東京"


def test_unknown_charset_label_falls_through():
    body = "<p>Grüße</p>".encode()
    assert charset.decode(body, "x-no-such-charset")[0] == "<p>Grüße</p>"


@pytest.mark.parametrize(
    "label, codec",
    [("ISO-8859-1", "cp1252"), ("latin1", "cp1252"), ("us-ascii", "cp1252"), ("GB2312", "gb18030"),
     ("Shift_JIS", "cp932"), ("EUC-KR", "cp949"), ("big5", "big5hkscs"), ("utf8", "utf-8"), ("bogus", None)],
)  # fmt: skip
def test_label_normalization(label, codec):
    assert charset.normalize(label) == codec


def test_output_is_always_valid_unicode():
    import os

    garbage = os.urandom(5000) + b"\xff\xfe\x00\xd8"  # incl. a lone UTF-16 surrogate at the end
    for http in (None, "utf-8", "utf-16", "shift_jis"):
        text, _ = charset.decode(garbage, http)
        text.encode("utf-8")  # raises if anything invalid slipped through


def test_meta_found_after_long_head():
    page = "<html><head>" + "<link rel=x>" * 300 + '<meta charset="koi8-r"></head><body><p>Текст</p></body>'
    assert len(page) < charset.META_SCAN_BYTES
    assert html_to_text(charset.decode(page.encode("koi8-r"))[0]) == "Текст"


def test_charset_page_helper_round_trip():
    for enc in SAMPLES:
        assert html_to_text(charset.decode(charset_page(enc, "header").encode(enc), enc)[0]).endswith(
            SAMPLES[enc]
        )


@pytest.mark.parametrize(
    "label", ["base64", "hex", "rot13", "idna", "undefined", "unicode_escape", "utf-7", "utf_7", "punycode",
              "zlib", "bz2", "quopri", "uu", "raw_unicode_escape", "mbcs", "utf-32", "cp037"],
)  # fmt: skip
def test_only_whatwg_labels_are_charsets(label):
    # Python codecs that are not WHATWG encodings: as a header or a meta charset they are unknown labels.
    body = "<p>Grüße +AGEAYgBj- \\x41</p>".encode()
    assert charset.normalize(label) is None
    assert charset.decode(body, label) == ("<p>Grüße +AGEAYgBj- \\x41</p>", "utf-8")
    meta = f'<meta charset="{label}">'.encode() + body
    assert charset.decode(meta, None)[1] == "utf-8"


def test_utf7_page_over_http_is_not_decoded_as_utf7(f, origin):
    out = f.fetch(origin.url("/echo-text?t=<p>a%2BADw-script%2BAD4-b</p>&ctype=text/html;charset=utf-7"))
    assert out.text == "a+ADw-script+AD4-b"


@pytest.mark.parametrize(
    "text", ["Café crème brûlée", "Über die Straße gehen wir früh", "naïve façade, déjà vu — 12 €"]
)
def test_short_undeclared_legacy_page_falls_back_to_windows_1252(f, origin, text):
    out = f.fetch(origin.url(f"/echo-text?t=<p>{text}</p>&ctype=text/html&as=cp1252"))
    assert (out.ok, out.text) == (True, text)
