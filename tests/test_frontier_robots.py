"""robots.txt through a real daemon ([robots] obey = true): RFC 9309 cases, each on its own origin.

One daemon serves every test of the module: robots.txt is cached per origin, and each test has its own.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shmfetch import Client
from shmfetch.testing.origin import Origin, start_origin

from .helpers import Daemon, daemon_stats, proc_kib, running_daemon

ROBOTS_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp: Path = tmp_path_factory.mktemp("robots")
    with running_daemon(tmp, robots={"obey": "true", "user_agent": "shmbot", "timeout": ROBOTS_TIMEOUT}) as d:
        yield d


@pytest.fixture
def site() -> Iterator[Origin]:
    with start_origin() as o:
        yield o


def fetch_all(d: Daemon, urls: list[str]) -> dict[str, object]:
    with Client(d.socket, timeout=60) as c:
        return {r.url: r for r in c.fetch_many(urls, concurrency=len(urls))}


def fetched(o: Origin, path: str) -> int:
    return sum(1 for e in o.log if e[0] == path)


def test_rules_wildcards_dollar_and_longest_match(daemon, site):
    site.respond(
        "/robots.txt",
        200,
        b"User-agent: otherbot\nDisallow: /\n\n"
        b"User-agent: shmbot\nDisallow: /private\nAllow: /private/open\nDisallow: /*.pdf$\n"
        b"Disallow: /tmp*/cache\n",
    )
    cases = {
        "/page/1": True,
        "/private/x": False,
        "/private/open/1": True,  # Allow beats the shorter Disallow
        "/doc.pdf": False,
        "/doc.pdf?x=1": True,  # $ anchors the end
        "/tmp1/cache": False,  # wildcard
        "/tmp1/other": True,
    }
    res = fetch_all(daemon, [site.url(p) for p in cases])
    for path, allowed in cases.items():
        r = res[site.url(path)]
        if allowed:
            assert r.error != "robots_denied", path
            assert fetched(site, path) == 1, path
        else:
            assert r.error == "robots_denied", (path, r.error)
            assert fetched(site, path) == 0, f"{path} was fetched although denied"
    assert fetched(site, "/robots.txt") == 1  # cached for the origin


def test_404_allows_everything(daemon, site):
    site.respond("/robots.txt", 404, b"no")
    res = fetch_all(daemon, [site.url("/page/1"), site.url("/page/2")])
    assert all(r.ok for r in res.values())


def test_503_disallows_everything_and_is_cached(daemon, site):
    site.respond("/robots.txt", 503, b"busy")
    res = fetch_all(daemon, [site.url("/page/1")])
    assert res[site.url("/page/1")].error == "robots_denied"
    res = fetch_all(daemon, [site.url("/page/2")])
    assert res[site.url("/page/2")].error == "robots_denied"
    assert fetched(site, "/page/1") == fetched(site, "/page/2") == 0
    assert fetched(site, "/robots.txt") == 1  # the error is cached for error_ttl


def test_slow_robots_is_unreachable_and_disallows(daemon, site):
    site.respond("/robots.txt", 200, b"User-agent: *\nAllow: /\n", delay=ROBOTS_TIMEOUT + 2)
    t0 = time.monotonic()
    res = fetch_all(daemon, [site.url("/page/1")])
    assert res[site.url("/page/1")].error == "robots_denied"
    assert time.monotonic() - t0 < ROBOTS_TIMEOUT + 1.5
    assert fetched(site, "/page/1") == 0


def test_redirect_loop_is_unavailable_after_five_redirects(daemon, site):
    site.respond("/robots.txt", 302, b"", {"Location": "/robots.txt"})
    res = fetch_all(daemon, [site.url("/page/1")])
    assert res[site.url("/page/1")].ok  # more than 5 redirects: "unavailable", like a 4xx
    assert fetched(site, "/robots.txt") == 6  # the first request and five redirects, no more


def test_two_mib_file_is_read_to_500_kib(daemon, site):
    padding = b"# " + b"x" * 97 + b"\n"
    body = (
        b"User-agent: *\nDisallow: /early\n" + padding * (2 * 1024 * 1024 // 100 + 1) + b"Disallow: /late\n"
    )
    assert len(body) > 2 * 1024 * 1024
    site.respond("/robots.txt", 200, body)
    res = fetch_all(daemon, [site.url("/early"), site.url("/late")])
    assert res[site.url("/early")].error == "robots_denied"
    assert res[site.url("/late")].error != "robots_denied"  # past 500 KiB: not parsed


@pytest.mark.slow
def test_a_gzip_robots_txt_is_decoded_within_its_500_kib(daemon, site):
    """robots.txt is read in the master: decoded by the Decoder pages use, so a compressed bomb costs the
    500 KiB prefix, not its expansion (it bypassed the Decoder and left the bound to urllib3)."""
    rules = b"User-agent: *\nDisallow: /zipped\n"
    body = gzip.compress(rules + b"#" * (200 * 1024 * 1024), 9)  # ~200 KB inflating to 200 MiB
    site.respond("/robots.txt", 200, body, {"Content-Encoding": "gzip"})
    before = proc_kib(daemon.pid, "VmHWM")
    res = fetch_all(daemon, [site.url("/zipped"), site.url("/open")])
    assert res[site.url("/zipped")].error == "robots_denied"
    assert res[site.url("/open")].error != "robots_denied"
    assert proc_kib(daemon.pid, "VmHWM") - before < 64 * 1024, "the master inflated the bomb"


@pytest.mark.slow
def test_crawl_delay_spaces_the_fetches(daemon, site):
    site.respond("/robots.txt", 200, b"User-agent: *\nCrawl-delay: 1\n")
    res = fetch_all(daemon, [site.url(f"/page/{i}") for i in range(3)])
    assert all(r.ok for r in res.values())
    starts = sorted(e[1] for e in site.log if e[0].startswith("/page/"))
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.99, gaps


def test_stats_count_the_denials(daemon, site):
    site.respond("/robots.txt", 200, b"User-agent: *\nDisallow: /\n")
    before = daemon_stats(daemon.socket)["failures"].get("robots_denied", 0)
    fetch_all(daemon, [site.url("/a"), site.url("/b")])
    st = daemon_stats(daemon.socket)
    assert st["failures"]["robots_denied"] == before + 2
    assert st["frontier"]["robots"]["denied"] >= 2


def test_a_backslash_authority_cannot_borrow_another_hosts_robots_txt(tmp_path):
    """``http://A\\@B/``: urlsplit reads host B, requests connects to A. With A disallowing everything and
    B allowing everything, the URL is refused as invalid and A never sees it."""
    with (
        start_origin(host="127.0.0.2") as a,
        start_origin(host="127.0.0.2") as b,
        running_daemon(
            tmp_path, robots={"obey": "true", "timeout": ROBOTS_TIMEOUT}, security={"allow_networks": "127.0.0.0/8"}
        ) as d,
        Client(d.socket, timeout=30) as c,
    ):
        a.respond("/robots.txt", 200, b"User-agent: *\nDisallow: /\n")
        b.respond("/robots.txt", 200, b"User-agent: *\nAllow: /\n")
        r = c.fetch(f"http://127.0.0.2:{a.port}\\@127.0.0.2:{b.port}/ok")
        assert r.error == "invalid_url" and "backslash" in r.message
        assert c.fetch(f"http://127.0.0.2:{a.port}/ok").error == "robots_denied"
    assert [e[0] for e in a.log if e[0] != "/robots.txt"] == []


def test_blocked_origins_leave_no_robots_decision_and_keep_their_true_error(tmp_path):
    """An origin the SSRF policy refuses got a disallow-all decision kept for error_ttl (one per host, never
    pruned), and its URLs were answered robots_denied instead of blocked_address."""
    urls = [f"http://127.0.0.2:{1024 + i}/x" for i in range(2000)]
    with running_daemon(tmp_path, robots={"obey": "true"}) as d, Client(d.socket, timeout=120) as c:
        results = list(c.fetch_many(urls, concurrency=256))
        st = daemon_stats(d.socket)
    assert {r.error for r in results} == {"blocked_address"}
    assert st["frontier"]["robots"]["origins"] == 0 and st["frontier"]["politeness"]["hosts"] == 0


def test_robots_decisions_are_bounded_least_recently_used_first():
    from shmfetch.config import FetchConfig, RobotsConfig, SecurityConfig
    from shmfetch.frontier.robots import ALLOW, Robots, Rules

    robots = Robots(RobotsConfig(max_origins=16), FetchConfig(), SecurityConfig(), lambda f, *a: f(*a))
    try:
        keep = "http://127.0.0.1:1"
        robots._resolved(keep, Rules(None, True, time.monotonic() + 600))
        for i in range(2, 200):
            robots._resolved(f"http://127.0.0.1:{i}", Rules(None, True, time.monotonic() + 600))
            assert robots.check(keep + "/page") == ALLOW  # used: it stays
            assert len(robots._rules) <= 16
        assert keep in robots._rules and "http://127.0.0.1:2" not in robots._rules
    finally:
        robots.close()
