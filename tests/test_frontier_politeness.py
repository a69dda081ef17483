"""Per-host politeness through a real daemon: 127.0.0.1, 127.0.0.2 and 127.0.0.3 are three hosts.

Each origin logs its own requests (start, end, concurrency); the daemon is judged by those logs.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from shmfetch import Client
from shmfetch.frontier.politeness import Politeness, host_of, url_authority
from shmfetch.frontier.robots import origin_of
from shmfetch.testing.origin import Origin, numbered_text, start_origin

from .helpers import daemon_stats, running_daemon, wait_for

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
LOOPBACK = {"allow_networks": "127.0.0.0/8"}


@contextlib.contextmanager
def three_origins() -> Iterator[list[Origin]]:
    with start_origin(host=HOSTS[0]) as a, start_origin(host=HOSTS[1]) as b, start_origin(host=HOSTS[2]) as c:
        yield [a, b, c]


def starts(o: Origin, prefix: str) -> list[float]:
    return sorted(e[1] for e in o.log if e[0].startswith(prefix))


# -- the gate on its own -----------------------------------------------------------------------------


def test_gate_never_blocks_another_host_behind_a_busy_one():
    g = Politeness(per_host=1, delay=0.0, max_retry_after=60, backoff=1)
    for i in range(5):
        g.add(("a", i), "a:80", 100.0)
    g.add(("b", 0), "b:80", 100.0)
    assert g.pop_ready(0.0) == ("a", 0)
    assert g.pop_ready(0.0) == ("b", 0)  # not stuck behind a's four waiting requests
    assert g.pop_ready(0.0) is None
    g.done("a:80", 200, None, "", 0.1)
    assert g.pop_ready(0.1) == ("a", 1)


def test_gate_pause_backoff_and_deadline():
    g = Politeness(per_host=4, delay=0.0, max_retry_after=5, backoff=1)
    g.add("x", "a:80", 100.0)
    assert g.pop_ready(0.0) == "x"
    g.done("a:80", 429, 2.0, "", 0.0)
    g.add("y", "a:80", 100.0)
    assert g.pop_ready(1.9) is None and g.next_wakeup() == 2.0
    assert g.pop_ready(2.0) == "y"
    g.done("a:80", 503, None, "", 2.0)  # second strike, no Retry-After: backoff 1 x 2
    g.add("z", "a:80", 3.0)
    assert g.pop_ready(3.9) is None
    assert g.expired(3.0) == ["z"] and g.waiting == 0
    g.add("w", "a:80", 100.0)
    assert g.pop_ready(4.0) == "w"
    g.done("a:80", 429, 3600.0, "", 4.0)  # capped at max_retry_after
    g.add("v", "a:80", 100.0)
    assert g.pop_ready(8.9) is None and g.pop_ready(9.0) == "v"


def test_host_is_host_and_port():
    assert host_of("http://Example.com/a") == "example.com:80"
    assert host_of("https://example.com./a") == "example.com:443"
    assert host_of("http://127.0.0.2:8080/x") == "127.0.0.2:8080"
    assert host_of("not a url") == ""


def test_host_keys_and_robots_origins_come_from_one_split():
    """politeness.host_of and robots.origin_of once parsed URLs each their own way."""
    cases = {
        "HTTP://Example.COM./a?b#c": ("http", "example.com", 80),
        "https://user:pw@127.0.0.2:8443/x": ("https", "127.0.0.2", 8443),
        "http://[::1]:8080/": ("http", "::1", 8080),
        "ftp://127.0.0.1/f": ("ftp", "127.0.0.1", 80),
        "http://127.0.0.1:99999/": None,  # port out of range
        "http:///nohost": None,
        "not a url": None,
    }
    for url, want in cases.items():
        assert url_authority(url) == want, url
    assert origin_of("HTTP://Example.COM./a") == "http://example.com:80"
    assert origin_of("http://[::1]:8080/") == "http://[::1]:8080"
    assert host_of("http://[::1]:8080/") == "::1:8080"
    assert origin_of("ftp://127.0.0.1/f") is None and host_of("ftp://127.0.0.1/f") == "127.0.0.1:80"
    assert origin_of("http:///nohost") is None and host_of("http:///nohost") == ""


# -- through the daemon ------------------------------------------------------------------------------


@pytest.mark.slow
def test_per_host_cap_holds_across_workers_and_the_time_is_what_the_cap_allows(tmp_path):
    per_host, n_per_host, latency = 2, 100, 0.1
    with three_origins() as origins:
        urls = [o.url(f"/slow?s={latency}&i={i}") for i in range(n_per_host) for o in origins]
        with running_daemon(
            tmp_path,
            daemon={"workers": 2, "threads": 8},
            security=LOOPBACK,
            politeness={"per_host": per_host},
        ) as d:
            with Client(d.socket, timeout=120) as c:
                # One fetch at a time first: the latency one slot of the cap really sees on this machine
                # (origin latency plus the daemon's round trip), measured in the same run.
                probes = []
                for i in range(13):
                    t0 = time.monotonic()
                    assert c.fetch(origins[i % 3].url(f"/slow?s={latency}&probe={i}")).ok
                    probes.append(time.monotonic() - t0)
                one = statistics.median(probes[3:])  # after each host's first (connection set-up)
                t0 = time.monotonic()
                results = list(c.fetch_many(urls, concurrency=300))
                elapsed = time.monotonic() - t0
        ideal = n_per_host * one / per_host
        print(
            f"\n{len(urls)} requests, 3 hosts, per_host={per_host}: {elapsed:.2f}s "
            f"(the cap allows {ideal:.2f}s at {one * 1000:.0f} ms a fetch)"
        )
        assert all(r.ok for r in results), {r.error for r in results}
        for o in origins:
            assert o.max_concurrent <= per_host, (o.host, o.max_concurrent)
            assert o.max_concurrent == per_host, "the cap was not used"
        assert elapsed < ideal * 1.3, (elapsed, ideal)


def test_delay_spaces_starts_to_one_host_and_leaves_other_hosts_alone(tmp_path):
    n, delay = 5, 0.2
    with three_origins() as (a, b, _):
        urls = [o.url(f"/page/{i}") for i in range(n) for o in (a, b)]
        with running_daemon(tmp_path, security=LOOPBACK, politeness={"delay": delay}) as d:
            with Client(d.socket, timeout=60) as c:
                results = list(c.fetch_many(urls, concurrency=len(urls)))
        assert all(r.ok for r in results)
        sa, sb = starts(a, "/page/"), starts(b, "/page/")
        gaps = [y - x for x, y in zip(sa, sa[1:], strict=False)] + [
            y - x for x, y in zip(sb, sb[1:], strict=False)
        ]
        print(f"\ngaps between starts to one host: {[round(g, 3) for g in gaps]}")
        assert min(gaps) >= delay - 0.01, gaps  # 10 ms: the origin's clock sees the request a bit later
        # b's fetches ran alongside a's, not after them (the two spans overlap)
        assert sb[0] < sa[-1] and sa[0] < sb[-1], (sa, sb)


def test_retry_after_pauses_that_host_only(tmp_path):
    with three_origins() as (a, b, _):
        with running_daemon(tmp_path, security=LOOPBACK, politeness={"per_host": 4}) as d:
            out: dict[str, object] = {}

            def first() -> None:
                with Client(d.socket, timeout=30) as c:
                    out["a"] = c.fetch(a.url("/retry-after?key=k&after=1"))

            t = threading.Thread(target=first)
            t.start()
            try:
                t_429 = wait_for(
                    lambda: next((e[2] for e in a.log if e[0].startswith("/retry-after") and e[2]), None),
                    10,
                    "the 429 answered",
                    step=0.01,
                )
                with Client(d.socket, timeout=30) as c:
                    others = list(c.fetch_many([b.url(f"/page/{i}") for i in range(5)]))
                    more_a = c.fetch(a.url("/page/1"))
            finally:
                t.join(30)
            st = daemon_stats(d.socket)
        assert out["a"].ok and out["a"].text == "welcome back"  # retried by the master after the pause
        assert all(r.ok for r in others) and more_a.ok and more_a.text == numbered_text(1)
        retry_start = starts(a, "/retry-after")[1]
        assert retry_start - t_429 >= 0.95, retry_start - t_429
        assert starts(a, "/page/1")[0] - t_429 >= 0.95  # a request to a during the pause waited too
        assert min(starts(b, "/page/")) - t_429 < 0.9  # b was served during a's pause
        assert st["frontier"]["politeness"]["paused"] == 1
        assert st["retries"] >= 1


@pytest.mark.slow
def test_a_request_waiting_past_its_deadline_is_answered_timeout(tmp_path):
    with start_origin() as o:
        with running_daemon(tmp_path, politeness={"per_host": 1, "max_wait": 0.5}) as d:
            with Client(d.socket, timeout=30) as c:
                results = list(c.fetch_many([o.url("/slow?s=2"), o.url("/page/1")], concurrency=2))
    by_url = {r.url: r for r in results}
    assert by_url[o.url("/slow?s=2")].ok
    late = by_url[o.url("/page/1")]
    assert late.error == "timeout" and "max_wait" in late.message
    assert not [e for e in o.log if e[0] == "/page/1"], "the timed-out request was fetched anyway"


@pytest.mark.parametrize("hosts", [1000])
def test_gate_holds_many_hosts(hosts):
    g = Politeness(per_host=2, delay=0.0, max_retry_after=60, backoff=1)
    for i in range(hosts * 3):
        g.add(i, f"h{i % hosts}:80", 100.0)
    got = []
    while (x := g.pop_ready(0.0)) is not None:
        got.append(x)
    assert len(got) == hosts * 2 and g.waiting == hosts


def test_the_worker_still_retries_502_and_504_when_the_master_handles_429_and_503(tmp_path, origin):
    """Regression: the master's no_status_retry (now the worker Fetcher's answer_pauses) turned off the
    worker's retry of every gateway error, though only 429 and 503 come back to the master's host pause;
    a 502 or 504 was never retried."""
    with running_daemon(tmp_path) as d, Client(d.socket, timeout=30) as c:
        for code in (502, 504):
            r = c.fetch(origin.url(f"/flaky?key=w{code}&fails=1&code={code}"))
            assert (r.ok, r.text) == (True, "finally"), (code, r.error)
            assert origin.hits(f"w{code}") == 2


def test_host_keys_name_the_host_requests_connects_to():
    """urllib3 (what requests connects with) ends the authority at a backslash where urlsplit does not; the
    gate and robots key on the host the connection goes to, and intake refuses such URLs outright."""
    from urllib3.util import parse_url

    from shmfetch.options import url_problem

    for url in ("http://127.0.0.2:8080\\@127.0.0.2:8081/ok", "http://127.0.0.2:8080\\x@127.0.0.3/"):
        target = parse_url(url)
        assert host_of(url) == f"{target.host}:{target.port}" == "127.0.0.2:8080", url
        assert origin_of(url) == "http://127.0.0.2:8080"
        assert url_problem(url) == "backslash in the URL's authority"
    assert url_problem("http://127.0.0.2:8080/a\\b?c\\d") is None  # a backslash in the path is a path
    odd = ("http://a\t@b/", "http://a@b@c/", "http://a:1@b:2/", "http://a%40b@c/", "http://[::1]@b/",
           "http://a#@b/", "http://a?@b/", "http://a\r\n@b/", "http://a b@c/", "http://a%5C@b/")  # fmt: skip
    for url in odd:  # wherever parsers could disagree, the key is urllib3's host
        assert url_authority(url)[1] == parse_url(url).host, url


def test_gate_keeps_at_most_max_hosts_and_never_forgets_a_busy_one():
    gate = Politeness(per_host=1, delay=0.0, max_retry_after=60, backoff=1, max_hosts=16)
    for i in range(1000):  # many distinct hosts, each fetched once
        host = f"h{i}:80"
        gate.add(f"r{i}", host, deadline=1e9)
        assert gate.pop_ready(0.0) == f"r{i}"
        gate.done(host, 200, None, "", 0.0, answered_at=0.0)
        assert len(gate.hosts) <= 16
    busy = [f"busy{i}:80" for i in range(40)]  # requests waiting: their hosts must stay
    for host in busy:
        gate.add(host, host, deadline=1e9)
    assert set(busy) <= gate.hosts.keys() and len(gate.hosts) == 40
    got = [gate.pop_ready(0.0) for _ in busy]
    assert sorted(got) == sorted(busy)  # every parked request still comes out
    for host in busy:
        gate.done(host, 200, None, "", 0.0, answered_at=0.0)
    gate.add("x", "last:80", deadline=1e9)
    assert len(gate.hosts) <= 16 and "last:80" in gate.hosts


def test_a_fetch_that_never_reached_its_host_leaves_nothing_in_the_gate():
    gate = Politeness(per_host=4, delay=1.0, max_retry_after=60, backoff=1)
    gate.add("r", "10.1.2.3:80", deadline=1e9)
    assert gate.pop_ready(0.0) == "r"
    gate.done("10.1.2.3:80", None, None, "", 0.0, answered_at=None, error="blocked_address")
    assert gate.hosts == {}
    gate.add("t", "slow:80", deadline=1e9)  # a timeout may well have reached it: its delay is kept
    assert gate.pop_ready(0.0) == "t"
    gate.done("slow:80", None, None, "", 0.0, answered_at=None, error="timeout")
    assert list(gate.hosts) == ["slow:80"]


@pytest.mark.slow
def test_twenty_thousand_blocked_urls_leave_no_host_tracked(tmp_path):
    """Hosts were recorded before the worker's SSRF check, and never pruned: 20 000 blocked URLs left
    20 000 hosts in the master. 127.0.0.2 is not in this daemon's allow_networks; nothing is connected."""
    urls = [f"http://127.0.0.2:{1024 + i}/x" for i in range(20_000)]
    with running_daemon(tmp_path) as d, Client(d.socket, timeout=120) as c:
        results = list(c.fetch_many(urls, concurrency=512))
        st = daemon_stats(d.socket)
    assert {r.error for r in results} == {"blocked_address"} and len(results) == len(urls)
    assert st["frontier"]["politeness"]["hosts"] == 0
