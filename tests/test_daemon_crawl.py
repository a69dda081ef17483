"""Crawls through a real daemon over the real test site (shmfetch/testing/crawlsite.py): for each scope,
depth, max_pages, include/exclude and robots.txt on and off, the exact set of URLs each origin served
(its own request log), the result stream and the summary; bad input; a caller that goes away; the CLI,
the async client and the SIGUSR1 count."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shmfetch import AsyncClient, Client, CrawlRefused, CrawlSummary, Result
from shmfetch.protocol import FrameDecoder, encode_frame
from shmfetch.testing import crawlsite
from shmfetch.testing.crawlsite import fetched
from shmfetch.testing.origin import Origin

from .helpers import Daemon, run_cli, running_daemon, start_origin, write_config

LOOPBACK = {"security": {"allow_networks": "127.0.0.0/8"}}


@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Origin]]:
    origins = {"A": Origin(host="127.0.0.1"), "B": Origin(host="127.0.0.2"), "A2": Origin(host="127.0.0.1")}
    try:
        crawlsite.serve(origins["A"], origins["B"], origins["A2"])
        yield origins
    finally:
        for o in origins.values():
            o.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("crawl"), **LOOPBACK) as d:
        yield d


def crawl(daemon: Daemon, site: dict[str, Origin], seed: str, **rules) -> tuple[list[Result], CrawlSummary]:
    for o in site.values():
        o.clear_log()
    with Client(daemon.socket, timeout=60) as c:
        answers = list(c.crawl([site["A"].url(seed)], **rules))
    summary = answers.pop()
    assert isinstance(summary, CrawlSummary)
    assert all(isinstance(r, Result) for r in answers)
    return answers, summary


def served(site: dict[str, Origin]) -> dict[str, set[str]]:
    """Each origin's served paths; every page at most once."""
    out = {}
    for name, o in site.items():
        paths = fetched(o)
        assert len(paths) == len(set(paths)), f"{name} served a page twice: {sorted(paths)}"
        out[name] = set(paths)
    return out


HOST_D1 = {"/", "/a", "/b", "/c?x=1&y=2", "/docs/"}
HOST_D2 = HOST_D1 | {"/a2", "/out", "/b2", "/c2", "/docs/one", "/docs/two"}
HOST = {
    0: {"A": {"/"}, "B": set(), "A2": set()},
    1: {"A": HOST_D1, "B": set(), "A2": set()},
    # /out redirects to B/y: the worker follows it, so B serves /y; its links are out of scope
    2: {"A": HOST_D2, "B": {"/y"}, "A2": set()},
    3: {"A": HOST_D2 | {"/a3", "/b3"}, "B": {"/y"}, "A2": set()},
}
# A2 is 127.0.0.1 on another port: the same registrable "domain" (an IP address is its own)
DOMAIN = {
    0: HOST[0],
    1: {"A": HOST_D1, "B": set(), "A2": {"/z"}},
    2: {"A": HOST_D2, "B": {"/y"}, "A2": {"/z", "/z2"}},
    3: {"A": HOST_D2 | {"/a3", "/b3"}, "B": {"/y"}, "A2": {"/z", "/z2"}},
}
ANY = {
    0: HOST[0],
    1: {"A": HOST_D1, "B": {"/x"}, "A2": {"/z"}},
    # B/in (depth 2) redirects to A/b3, which is then fetched at depth 2
    2: {"A": HOST_D2 | {"/b3"}, "B": {"/x", "/y", "/in", "/x2"}, "A2": {"/z", "/z2"}},
    # /b2's link to /b3 (depth 3) is a duplicate of that redirect target; B/y's links are followed now
    3: {"A": HOST_D2 | {"/b3", "/a3"}, "B": {"/x", "/y", "/in", "/x2", "/y2"}, "A2": {"/z", "/z2"}},
}
REDIRECTS_FETCHED = {("host", 2): 1, ("host", 3): 1, ("domain", 2): 1, ("domain", 3): 1, ("any", 2): 2,
                     ("any", 3): 2}  # fmt: skip


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
@pytest.mark.parametrize("scope", ["host", "domain", "any"])
def test_each_scope_fetches_the_graph_to_each_depth(
    daemon: Daemon, site: dict[str, Origin], scope: str, depth: int
) -> None:
    results, summary = crawl(daemon, site, "/", depth=depth, scope=scope)
    expected = {"host": HOST, "domain": DOMAIN, "any": ANY}[scope][depth]
    assert served(site) == expected
    # a redirect is one request and one result for two paths served
    requests = sum(len(paths) for paths in expected.values()) - REDIRECTS_FETCHED.get((scope, depth), 0)
    assert summary.ok + summary.failed == len(results) == requests
    assert summary.limit == "depth"


def test_robots_off_fetches_the_disallowed_section(daemon: Daemon, site: dict[str, Origin]) -> None:
    _, summary = crawl(daemon, site, "/", depth=2, robots=False)
    assert served(site) == {"A": HOST_D2 | {"/private/p", "/private/q"}, "B": {"/y"}, "A2": set()}
    assert summary.robots_denied == 0


def test_a_redirect_target_counts_as_seen(daemon: Daemon, site: dict[str, Origin]) -> None:
    crawl(daemon, site, "/", depth=3, scope="any")
    assert fetched(site["A"]).count("/b3") == 1  # via B/in at depth 2; /b2's link at depth 3 is a duplicate


def test_prefix_scope_stays_under_the_seeds_directory(daemon: Daemon, site: dict[str, Origin]) -> None:
    crawl(daemon, site, "/docs/", depth=3, scope="prefix")
    assert served(site) == {"A": {"/docs/", "/docs/one", "/docs/two"}, "B": set(), "A2": set()}


def test_max_pages_keeps_the_shallow_pages_and_never_requests_more(
    daemon: Daemon, site: dict[str, Origin]
) -> None:
    # Level 1 holds /a /b /c /private/p /docs/; robots.txt denies /private/p, which frees its place
    results, summary = crawl(daemon, site, "/", depth=3, max_pages=5)
    assert served(site) == {"A": HOST_D1, "B": set(), "A2": set()}
    assert len(results) == 5 and summary.limit == "max_pages" and summary.robots_denied == 1


def test_include_follows_only_matching_links(daemon: Daemon, site: dict[str, Origin]) -> None:
    crawl(daemon, site, "/", depth=3, include=["/a"])
    assert served(site) == {"A": {"/", "/a", "/a2", "/a3"}, "B": set(), "A2": set()}


def test_exclude_drops_matching_links(daemon: Daemon, site: dict[str, Origin]) -> None:
    _, summary = crawl(daemon, site, "/", depth=1, exclude=["/docs/", r"\?"])
    assert served(site) == {"A": {"/", "/a", "/b"}, "B": set(), "A2": set()}
    assert summary.excluded == 2


def test_include_asks_for_a_non_page(daemon: Daemon, site: dict[str, Origin]) -> None:
    results, summary = crawl(daemon, site, "/", depth=1, include=[r"\.png$", "/a$"])
    assert served(site) == {"A": {"/", "/a", "/logo.png"}, "B": set(), "A2": set()}
    logo = next(r for r in results if r.url.endswith("/logo.png"))
    assert not logo.ok and logo.error == "unsupported_content_type" and summary.failed == 1


def test_results_carry_depth_and_referrer_and_the_summary_counts(
    daemon: Daemon, site: dict[str, Origin]
) -> None:
    results, s = crawl(daemon, site, "/", depth=1)
    seed = site["A"].url("/")
    got = {r.url: (r.crawl_depth, r.referrer) for r in results}
    assert got == {seed: (0, None), **{site["A"].url(p): (1, seed) for p in HOST_D1 - {"/"}}}
    assert all(r.ok and r.links is None and "Page" in r.text for r in results)  # links only when asked
    assert (s.ok, s.failed, s.robots_denied, s.not_page, s.out_of_scope, s.duplicates) == (5, 0, 1, 1, 2, 1)
    assert s.limit == "depth" and s.elapsed_s > 0


def test_links_are_returned_when_the_caller_asks(daemon: Daemon, site: dict[str, Origin]) -> None:
    results, _ = crawl(daemon, site, "/", depth=0, links=True)
    assert results[0].links and {"url": site["A"].url("/a"), "internal": True} in results[0].links


def test_fragment_and_query_order_variants_are_one_page(daemon: Daemon, site: dict[str, Origin]) -> None:
    crawl(daemon, site, "/", depth=2)
    paths = fetched(site["A"])
    assert paths.count("/b") == 1 and "/c?y=2&x=1" not in paths and paths.count("/c?x=1&y=2") == 1


def test_sitemaps_seed_a_page_no_page_links_to(daemon: Daemon, site: dict[str, Origin]) -> None:
    # robots.txt names a sitemap index, whose gzipped sitemap lists /hidden: depth 0, like the seed
    results, summary = crawl(daemon, site, "/", depth=1, sitemaps=True)
    sitemap_docs = {"/sitemap-index.xml", "/sitemap-pages.xml.gz"}
    assert served(site) == {"A": HOST_D1 | {"/hidden", "/hidden2"} | sitemap_docs, "B": set(), "A2": set()}
    hidden = next(r for r in results if r.url == site["A"].url("/hidden"))
    assert (hidden.crawl_depth, hidden.referrer) == (0, site["A"].url("/sitemap-pages.xml.gz"))
    assert summary.sitemaps == 2 and summary.ok == 7


def test_sitemap_xml_is_read_when_robots_txt_names_none(daemon: Daemon, site: dict[str, Origin]) -> None:
    for o in site.values():
        o.clear_log()
    with Client(daemon.socket, timeout=60) as c:
        answers = list(c.crawl([site["B"].url("/x")], depth=0, sitemaps=True))
    assert served(site) == {"A": set(), "B": {"/x", "/sitemap.xml", "/y2"}, "A2": set()}
    assert answers[-1].sitemaps == 1 and answers[-1].ok == 2


def test_sitemaps_off_reads_none(daemon: Daemon, site: dict[str, Origin]) -> None:
    crawl(daemon, site, "/", depth=1)
    assert not {"/sitemap-index.xml", "/sitemap-pages.xml.gz", "/hidden"} & set(fetched(site["A"]))


def test_seeds_that_are_one_page_are_crawled_once(daemon: Daemon, site: dict[str, Origin]) -> None:
    for o in site.values():
        o.clear_log()
    a = site["A"]
    with Client(daemon.socket, timeout=60) as c:
        answers = list(c.crawl([a.url("/c?x=1&y=2"), a.url("/c?y=2&x=1#f")], depth=0))
    assert len(answers) == 2 and answers[-1].duplicates == 1
    assert fetched(a) == ["/c?x=1&y=2"]


@pytest.mark.parametrize(
    ("seeds", "rules", "words"),
    [
        ([], {}, "at least one seed"),
        (["notaurl"], {}, "http(s)"),
        (["http://127.0.0.1:1/"], {"include": ["("]}, "bad regex"),
        (["http://127.0.0.1:1/"], {"depth": -1}, "'depth' = -1"),
        (["http://127.0.0.1:1/"], {"max_pages": 10**6}, "'max_pages'"),
        (["http://127.0.0.1:1/"], {"scope": "galaxy"}, "'scope'"),
    ],
)
def test_bad_input_is_a_clear_error_and_the_daemon_serves_on(
    daemon: Daemon, site: dict[str, Origin], seeds, rules, words
) -> None:
    with Client(daemon.socket, timeout=30) as c:
        with pytest.raises(CrawlRefused, match=words.replace("(", r"\(").replace(")", r"\)")):
            list(c.crawl(seeds, **rules))
        assert c.fetch(site["A"].url("/a")).ok  # the same connection goes on


@pytest.mark.slow
def test_a_caller_that_goes_away_stops_its_crawl(tmp_path: Path) -> None:
    # A slow site of 1 + 10 + 100 pages: the caller reads the seed's result and hangs up while level 1
    # is in flight; those ten results are dropped on arrival and level 2 is never requested.
    with start_origin(latency=0.5) as slow, running_daemon(tmp_path, **LOOPBACK) as d:
        for path, links in _tree().items():
            slow.respond(path, 200, crawlsite.page_html(path, links, {}), crawlsite.HTML)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(d.socket)
        sock.sendall(encode_frame({"id": 1, "op": "crawl", "seeds": [slow.url("/")], "crawl": {"depth": 2}}))
        decoder, frames = FrameDecoder(1 << 24), []
        while not frames:
            frames = decoder.feed(sock.recv(1 << 16))
        assert frames[0]["url"] == slow.url("/")
        sock.close()
        time.sleep(3.0)
        assert len(fetched(slow)) <= 11
        with Client(d.socket, timeout=30) as c:  # the daemon serves on
            assert c.fetch(slow.url("/p1")).ok


def test_stats_count_the_crawls(daemon: Daemon, site: dict[str, Origin]) -> None:
    crawl(daemon, site, "/", depth=0)
    with Client(daemon.socket, timeout=30) as c:
        figures = c.stats()["crawls"]
    assert figures["started"] >= 1 and figures["active"] == 0


@pytest.mark.slow
def test_a_stopping_daemon_ends_its_crawls_with_what_was_in_flight(tmp_path: Path) -> None:
    # SIGUSR1 while level 1 is in flight: those ten pages are delivered, level 2 is never requested, the
    # summary says shutting_down, and the daemon's count equals the ok results the caller received.
    with start_origin(latency=0.5) as slow:
        for path, links in _tree().items():
            slow.respond(path, 200, crawlsite.page_html(path, links, {}), crawlsite.HTML)
        d = Daemon(write_config(tmp_path, **LOOPBACK), tmp_path / "shmfetch.sock")
        try:
            with Client(d.socket, timeout=60) as c:
                answers = []
                for got in c.crawl([slow.url("/")], depth=2):
                    answers.append(got)
                    if len(answers) == 1:
                        d.proc.send_signal(signal.SIGUSR1)
        finally:
            code, _ = d.stop()
    summary = answers.pop()
    assert summary.limit == "shutting_down" and summary.ok == len(answers) == 11
    assert code == 0 and d.last_line() == "downloaded 11 URLs"
    assert len(fetched(slow)) == 11


def _tree() -> dict[str, list[str]]:
    """A root, ten children, a hundred grandchildren."""
    return {"/": [f"/p{i}" for i in range(10)]} | {
        f"/p{i}": [f"/p{i}-{j}" for j in range(10)] for i in range(10)
    }


def test_cli_crawl_json_lines_and_exit_codes(daemon: Daemon, site: dict[str, Origin]) -> None:
    seed = site["A"].url("/")
    p = run_cli("crawl", "--socket", daemon.socket, "--depth", "1", "--json", seed)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert set(lines[-1]) == {"summary"} and lines[-1]["summary"]["ok"] == 5
    assert {row["url"] for row in lines[:-1]} == {site["A"].url(x) for x in HOST_D1}
    p = run_cli(
        "crawl", "--socket", daemon.socket, "--depth", "1", "--include", r"\.png$", "--include", "/a$", seed
    )
    assert (
        p.returncode == 1 and "unsupported_content_type" in p.stdout and "crawl: 2 ok, 1 failed" in p.stderr
    )
    for bad in (["--depth", "-1"], ["--include", "("], ["--scope", "moon"], ["--max-pages", "0"]):
        p = run_cli("crawl", "--socket", daemon.socket, *bad, seed)
        assert p.returncode == 2 and p.stderr, bad
    p = run_cli("crawl", "--socket", daemon.socket, "--max-pages", "1000000", seed)
    assert p.returncode == 2 and "max_pages" in p.stderr


def test_async_client_crawls(daemon: Daemon, site: dict[str, Origin]) -> None:
    for o in site.values():
        o.clear_log()

    async def run() -> list:
        async with await AsyncClient.connect(daemon.socket) as c:
            out = [x async for x in c.crawl([site["A"].url("/")], depth=1)]
            assert (await c.fetch(site["A"].url("/a"))).ok  # calls and crawls share the connection
            return out

    answers = asyncio.run(asyncio.wait_for(run(), 60))
    assert isinstance(answers[-1], CrawlSummary) and answers[-1].ok == 5
    assert {r.url for r in answers[:-1]} == {site["A"].url(x) for x in HOST_D1}


def test_sigusr1_count_counts_crawl_pages(tmp_path: Path, site: dict[str, Origin]) -> None:
    d = Daemon(write_config(tmp_path, **LOOPBACK), tmp_path / "shmfetch.sock")
    try:
        with Client(d.socket, timeout=60) as c:
            answers = list(c.crawl([site["A"].url("/")], depth=1))
        assert answers[-1].ok == 5
    finally:
        code, _ = d.stop()
    assert code == 0 and d.last_line() == "downloaded 5 URLs"
