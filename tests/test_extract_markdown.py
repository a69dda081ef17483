"""Markdown is the main content, formatted: the same selection as ``main``, scored on its text.

``guide-sidebar.html`` (tools/make_eval_pages.py) has the layout on which trafilatura's link mode took a
sidebar of ``<p>``s inside links for the article: Markdown returned the sidebar there while ``main``
returned the article.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shmfetch.extract.evaluate import (
    evaluate,
    extract_page,
    load_expected,
    strip_markdown,
    summary,
    token_scores,
)
from shmfetch.extract.maintext import html_text

PAGES = Path(__file__).resolve().parent / "pages"
EXPECTED = PAGES / "expected.jsonl"
SIDEBAR_PAGE = "guide-sidebar.html"


def test_markdown_scores_within_a_hundredth_of_main_on_the_shipped_pages():
    main = evaluate(PAGES, EXPECTED, "main")
    markdown = evaluate(PAGES, EXPECTED, "markdown")
    assert summary(markdown)["f1"] >= summary(main)["f1"] - 0.01, (summary(main), summary(markdown))
    for (name, *_, f_main), (_, *_, f_md) in zip(main, markdown, strict=True):
        assert f_md >= f_main - 0.01, (name, f_main, f_md)


def test_markdown_takes_the_article_not_the_link_sidebar():
    html = (PAGES / SIDEBAR_PAGE).read_text(encoding="utf-8")
    expected = load_expected(EXPECTED)[SIDEBAR_PAGE]
    md = html_text(html, "markdown", None)[0]
    main = html_text(html, "main", None)[0]
    first_sentence = expected.split("\n", 1)[0]
    assert first_sentence in md
    assert token_scores(strip_markdown(md), expected)[1] == 1.0  # all of the article (recall was 0.14)
    assert abs(token_scores(strip_markdown(md), expected)[2] - token_scores(main, expected)[2]) <= 0.01
    assert md.startswith("# ") or "\n# " in md or md.count("\n\n") >= 5  # still Markdown: blocks, a heading


def test_markdown_is_formatted():
    html = (PAGES / "rail-strike.html").read_text(encoding="utf-8")
    md = html_text(html, "markdown", None)[0]
    assert "## What the dispute is about" in md  # a subheading as Markdown


@pytest.mark.parametrize(
    "md, text",
    [
        ("# Title", "Title"),
        ("Some **bold** and *it* and _u_ text", "Some bold and it and u text"),
        ("see [the guide](http://x.test/g) now", "see the guide now"),
        ("- one\n- two\n1. three", "one\ntwo\nthree"),
        ("> quoted", "quoted"),
        ("a `code` b", "a code b"),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "a b\n\n1 2"),
        ("snake_case_name and 3*4", "snake_case_name and 3*4"),
    ],
)
def test_strip_markdown_leaves_the_words(md, text):
    assert strip_markdown(md).split() == text.split()


def test_evaluate_scores_markdown_without_its_syntax():
    html = (PAGES / "rail-strike.html").read_text(encoding="utf-8")
    assert "##" not in extract_page(html, "markdown")


LINKS_PAGE = """<!DOCTYPE html><html><head><title>Home news</title></head><body>
<nav><ul><li><a href="/home">Home</a></li><li><a href="/energy">Energy prices</a></li></ul></nav>
<article><h1>Home energy prices fall</h1>
<p>Home energy prices fell for the third month in a row, the <a href="/office">statistics office</a> said on
Tuesday, as wholesale gas became cheaper across the whole of the continent over the winter months.</p>
<p>Energy prices had risen sharply two years ago, and households are still paying more than they did
before, the office added, although the gap is now closing faster than most economists had expected.</p>
<ul><li>Read the <a href="https://127.0.0.1/report.pdf">full report</a></li></ul>
</article>
<aside><ul><li><a href="/side">Home energy prices fall</a></li></ul></aside></body></html>"""


def test_markdown_keeps_the_links_of_the_content_and_no_others():
    md = html_text(LINKS_PAGE, "markdown", "http://127.0.0.1/news/story")[0]
    assert "[statistics office](http://127.0.0.1/office)" in md
    assert "[full report](https://127.0.0.1/report.pdf)" in md
    # The menu's "Home" and "Energy prices", and the sidebar's copy of the headline, are not content.
    assert "/home)" not in md and "/energy)" not in md and "/side)" not in md, md
