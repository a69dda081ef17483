"""The HTTP API ([http] listen) through a real daemon: content negotiation, HEAD, repeated parameters, the
bearer token, the Host/Origin guard against DNS rebinding, and the bound on receiving a request's headers."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from shmfetch.config import TOKEN_ENV, Config, ConfigError, HttpConfig, check_http_exposure, http_token
from shmfetch.testing.net import free_port as closed_port  # nothing listens on a free port

from .helpers import http_api_daemon, run_cli, write_config

TOKEN = "k3y-0123456789abcdef-XYZ"


@pytest.fixture(scope="module")
def open_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One tokenless daemon for the tests that need no token: loopback, allowed_hosts, header_timeout 1 s."""
    with http_api_daemon(tmp_path_factory.mktemp("http"), allowed_hosts="api.internal", header_timeout=1) as base:
        yield base


def get(base: str, path: str, **kw: object) -> requests.Response:
    return requests.get(base + path, timeout=30, **kw)  # type: ignore[arg-type]


def rejected(base: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    r = get(base, "/metrics", headers=headers or {})
    assert r.status_code == 200, r.text
    out = {}
    for fam in text_string_to_metric_families(r.text):
        if fam.name == "shmfetch_http_rejected":
            out = {s.labels["reason"]: s.value for s in fam.samples if s.name.endswith("_total")}
    return out


# -- content negotiation, HEAD, repeated parameters --------------------------------------------------


def test_negotiation_honours_q_values():
    from shmfetch.fronts.http import negotiate

    assert negotiate("text/markdown;q=0, text/plain") == "text"
    assert negotiate("text/markdown;q=0.4, text/plain;q=0.5") == "text"
    assert negotiate("text/plain;q=0.5, text/markdown") == "markdown"
    assert negotiate("text/markdown;q=0.9, */*") == "text"  # */* gives text/plain q=1
    assert negotiate("text/markdown, */*;q=0.1") == "markdown"
    assert negotiate("application/json;q=0, */*") == "text"
    assert negotiate("application/json, text/plain, */*") == "json"
    assert negotiate("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8") == "text"
    assert negotiate("text/*, application/json;q=0.2") == "text"
    assert negotiate("text/markdown;q=zero, text/plain;q=0.1") == "text"  # a malformed q is 0
    assert negotiate(None) == negotiate("") == negotiate("image/png") == "text"
    assert negotiate("text/markdown", markdown_offered=False) == "text"  # mode=text was asked for


def test_accept_q_zero_refuses_markdown(open_api, origin):
    """``Accept: text/markdown;q=0, text/plain`` was answered with Markdown: any mention of it chose it."""
    url = origin.url("/page/3")
    md = get(open_api, "/fetch", params={"url": url}, headers={"Accept": "text/markdown"})
    assert md.status_code == 200 and md.headers["Content-Type"].startswith("text/markdown")
    plain = get(open_api, "/fetch", params={"url": url}, headers={"Accept": "text/markdown;q=0, text/plain"})
    assert plain.status_code == 200 and plain.headers["Content-Type"].startswith("text/plain")
    assert plain.text == get(open_api, "/fetch", params={"url": url}).text
    js = get(open_api, "/fetch", params={"url": url}, headers={"Accept": "application/json;q=0.1, */*"})
    assert js.headers["Content-Type"].startswith("text/plain")


def test_head_is_answered_as_get_without_the_body(open_api, origin):
    """HEAD was 405."""
    url = origin.url("/page/3")
    full = get(open_api, "/fetch", params={"url": url})
    head = requests.head(open_api + "/fetch", params={"url": url}, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Type"] == full.headers["Content-Type"]
    assert head.headers["X-Shmfetch-Upstream-Status"] == "200"
    missing = requests.head(open_api + "/fetch", params={"url": origin.url("/status/404")}, timeout=30)
    assert missing.status_code == 502 and missing.headers["X-Shmfetch-Error"] == "http_status"
    assert missing.content == b""
    assert requests.head(open_api + "/stats", timeout=30).status_code == 200


def test_a_repeated_url_is_a_bad_request(open_api, origin):
    """The second url= was dropped silently."""
    twice = get(open_api, "/fetch", params=[("url", origin.url("/page/3")), ("url", origin.url("/page/4"))])
    assert twice.status_code == 400 and twice.headers["X-Shmfetch-Error"] == "bad_request"
    assert "'url' is given twice" in twice.text


# -- the token ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_token_right_wrong_missing_and_of_another_length(tmp_path, origin):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    url = origin.url("/page/1")
    with http_api_daemon(tmp_path, token_file=token_file) as base:
        right = get(base, "/fetch", params={"url": url}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200 and right.text.strip()
        cases = {
            "missing_token": {},
            "wrong_token": {"Authorization": "Bearer " + TOKEN[:-1] + "Q"},  # same length
        }
        for reason, headers in cases.items():
            r = get(base, "/fetch", params={"url": url}, headers=headers)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), reason
        for other in (TOKEN[:-1], TOKEN + "0", TOKEN * 3, "x"):  # other lengths
            r = get(base, "/fetch", params={"url": url}, headers={"Authorization": f"Bearer {other}"})
            assert r.status_code == 401 and "error=" in r.headers["WWW-Authenticate"]
        assert get(base, "/fetch", params={"url": url}, headers={"Authorization": TOKEN}).status_code == 401
        assert get(base, "/stats").status_code == 401
        # /metrics needs the token too, and counts the refusals by reason, never by token
        assert get(base, "/metrics").status_code == 401
        r = get(base, "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert TOKEN not in r.text and TOKEN[:8] not in r.text
        counts = rejected(base, {"Authorization": f"Bearer {TOKEN}"})
    assert counts["missing_token"] == 4  # none, "Authorization: TOKEN" (no scheme), /stats, /metrics
    assert counts["wrong_token"] == 5 and counts["foreign_host"] == 0


def test_metrics_public_and_the_token_from_the_environment(tmp_path, origin):
    env = {**os.environ, TOKEN_ENV: TOKEN}
    with http_api_daemon(tmp_path, env=env, metrics_public="true") as base:
        assert get(base, "/fetch", params={"url": origin.url("/page/1")}).status_code == 401
        assert get(base, "/stats").status_code == 401
        assert rejected(base)["missing_token"] == 2  # /metrics itself needs none
        authed = {"Authorization": f"Bearer {TOKEN}"}
        assert get(base, "/fetch", params={"url": origin.url("/page/1")}, headers=authed).status_code == 200


def test_serve_refuses_an_exposed_listen_without_a_token(tmp_path):
    """Refused before anything starts; the same config passes with a token or on purpose."""
    # A name, not 0.0.0.0: were the check missing, serve could not bind it either (nothing beyond loopback).
    cfg = write_config(tmp_path, http={"listen": f"shmfetch-test.invalid:{closed_port()}"})
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    p = run_cli("serve", "-c", str(cfg), env=env, timeout=30)
    assert p.returncode == 2 and "not loopback and there is no token" in p.stderr
    assert "allow_unauthenticated" in p.stderr and not (tmp_path / "shmfetch.sock").exists()
    exposed = Config(http=HttpConfig(listen="0.0.0.0:8088"))
    with pytest.raises(ConfigError, match="no token"):
        check_http_exposure(exposed, env={})
    with pytest.raises(ConfigError, match="no token"):
        check_http_exposure(Config(http=HttpConfig(listen="api.example:8088")), env={})
    check_http_exposure(exposed, env={TOKEN_ENV: TOKEN})
    check_http_exposure(Config(http=HttpConfig(listen="0.0.0.0:8088", allow_unauthenticated=True)), env={})
    for loopback in ("127.0.0.1:8088", "[::1]:8088", "localhost:8088"):
        check_http_exposure(Config(http=HttpConfig(listen=loopback)), env={})


def test_token_sources_and_their_checks(tmp_path):
    f = tmp_path / "token"
    f.write_text(f"  {TOKEN}\n")
    assert http_token(HttpConfig(token_file=str(f)), env={TOKEN_ENV: "ignored-ignored-ignored"}) == TOKEN
    assert http_token(HttpConfig(), env={TOKEN_ENV: TOKEN}) == TOKEN
    assert http_token(HttpConfig(), env={}) is None
    f.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16"):
        http_token(HttpConfig(token_file=str(f)), env={})
    with pytest.raises(ConfigError, match="cannot read"):
        http_token(HttpConfig(token_file=str(tmp_path / "absent")), env={})
    with pytest.raises(ConfigError, match="no spaces"):
        http_token(HttpConfig(), env={TOKEN_ENV: "two words, sixteen+ chars"})


# -- Host and Origin (DNS rebinding) -----------------------------------------------------------------


def test_only_hosts_naming_the_listen_address_or_allowed_names_are_served(open_api):
    base = open_api
    before = rejected(base)
    port = base.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "API.internal", "api.internal:80"):
        assert get(base, "/stats", headers={"Host": host}).status_code == 200, host
    for host in (f"rebind.example:{port}", "127.0.0.2", f"[::1]:{port}", "api.internal.evil"):
        r = get(base, "/stats", headers={"Host": host})
        assert r.status_code == 403 and "Host" in r.text, host
    assert get(base, "/stats", headers={"Origin": f"http://localhost:{port}"}).status_code == 200
    for o in ("http://rebind.example", "null", "https://api.internal.evil"):
        assert get(base, "/stats", headers={"Origin": o}).status_code == 403, o
    counts = rejected(base)
    assert counts["foreign_host"] - before.get("foreign_host", 0) == 4
    assert counts["foreign_origin"] - before.get("foreign_origin", 0) == 3


# -- receiving a request's headers -------------------------------------------------------------------


@pytest.mark.slow
def test_a_half_sent_request_is_closed_after_header_timeout(open_api, origin):
    """A request whose headers never end held its connection (and a max_connections slot) forever."""
    base = open_api
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
        t0 = time.monotonic()
        assert get(base, "/stats").status_code == 200  # other clients are served meanwhile
        try:
            got = s.recv(4096)
        except TimeoutError:
            pytest.fail("the half-sent request was still open after 10 s")
        waited = time.monotonic() - t0
    assert got == b"" and waited < 8
    # the bound is on receiving headers, not on answering: a fetch slower than it is answered, and the
    # connection is kept alive for the next request
    with requests.Session() as session:
        slow = session.get(base + "/fetch", params={"url": origin.url("/slow?s=2")}, timeout=30)
        assert slow.status_code == 200 and "slow" in slow.text
        assert session.get(base + "/stats", timeout=30).status_code == 200


def test_host_guard_rules():
    from shmfetch.fronts.http import HostGuard

    by_name = HostGuard("localhost", ())  # listening on a loopback name: its addresses are fine too
    assert all(by_name.allows_host(h) for h in ("localhost:8088", "127.0.0.1:8088", "[::1]:8088", None))
    assert not by_name.allows_host("rebind.example:8088")
    everywhere = HostGuard("0.0.0.0", ("api.example",))  # any address literal, and the listed names
    assert all(everywhere.allows_host(h) for h in ("192.0.2.7:8088", "[2001:db8::1]:80", "API.example."))
    assert not everywhere.allows_host("localhost") and not everywhere.allows_host("evil.example")
    assert everywhere.allows_origin("https://api.example:8443") and not everywhere.allows_origin("null")
    v6 = HostGuard("::1", ())
    assert v6.allows_host("[::1]:8088") and not v6.allows_host("127.0.0.1:8088")
