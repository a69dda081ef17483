"""Extraction memory per page is bounded by ``[fetch] max_tree_tags``, not by the page's shape.

A parsed tree costs ~280 bytes a tag: a 7 MB page of 300 000 links took 170 MB as a tree and 232 MB with
its text and links in a worker. Over the budget the text comes from the streaming parser instead.
"""

from __future__ import annotations

import pytest

from shmfetch.config import FetchConfig, SecurityConfig
from shmfetch.extract.page import page_fetcher
from shmfetch.options import effective

from .helpers import (
    origin_fixture,  # noqa: F401 (origin is a fixture)
    proc_kib,
)

LOOPBACK = SecurityConfig(allow_networks=("127.0.0.1/32",))
LINKS = 300_000


@pytest.fixture(scope="module")
def link_farm() -> bytes:
    """The page of the report: about 7 MB, 300 000 links."""
    links = "".join(f"<a href=/p/{i}>x</a> " for i in range(LINKS))
    return f"<html><head><title>links</title></head><body>{links}</body></html>".encode()


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM back to the current RSS (Linux >= 4.0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["text", "main"])
def test_a_page_of_300000_links_costs_a_bounded_amount(origin, link_farm, mode):
    origin.respond("/link-farm", 200, link_farm, {"Content-Type": "text/html; charset=utf-8"})
    cfg = FetchConfig(timeout=30.0, retries=0)
    fetcher = page_fetcher(cfg, LOOPBACK)
    try:
        _reset_hwm()
        before = proc_kib("self", "VmHWM")
        out = fetcher.fetch(origin.url("/link-farm"), effective({"mode": mode, "links": True}, cfg))
        grew_mib = (proc_kib("self", "VmHWM") - before) / 1024
    finally:
        fetcher.close()
    print(f"\n{len(link_farm) / 1e6:.1f} MB page of {LINKS} links, {mode}: peak RSS grew by {grew_mib:.0f} MiB")
    assert out.ok and out.text.split() == ["links"] + ["x"] * LINKS
    assert (out.links, out.links_truncated) == ([], True)  # links a tree would have read: reported cut
    assert grew_mib < 64, f"{grew_mib:.0f} MiB for one page"  # the tree took 195 MiB and more


def test_a_page_under_the_budget_keeps_its_tree(origin):
    # 2 004 tags ("<"), under a budget of 2 100.
    page = "<html><body>" + "".join(f'<p><a href="/p/{i}">x</a></p>' for i in range(500)) + "</body></html>"
    origin.respond("/some-links", 200, page.encode(), {"Content-Type": "text/html"})
    cfg = FetchConfig(timeout=10.0, retries=0, max_tree_tags=2100)
    fetcher = page_fetcher(cfg, LOOPBACK)
    out = fetcher.fetch(origin.url("/some-links"), effective({"links": True}, cfg))
    fetcher.close()
    assert (len(out.links or []), out.links_truncated) == (500, False)
