"""SSRF policy: address classification (pure, no connections) and the Fetcher's enforcement on 127.0.0.0/8.

Only loopback is ever connected to: the default-deny behaviour is exercised by allowing 127.0.0.1/32 and
expecting 127.0.0.2 (and anything not allowed) to be blocked before any connection is made.
"""

from __future__ import annotations

import socket

import pytest

from shmfetch.config import FetchConfig, SecurityConfig
from shmfetch.extract.page import page_fetcher
from shmfetch.fetch.fetcher import Fetcher
from shmfetch.fetch.netpolicy import NetPolicy, embedded_ipv4
from shmfetch.testing.origin import make_cert, page_text, start_origin

from .helpers import origin_fixture  # noqa: F401 (origin_fixture)

DENIED_BY_DEFAULT = [
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "127.0.0.1",
    "127.255.255.254",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%1",
    "ff02::1",
    "fec0::1",
    "2001:db8::1",
    "2001::1",  # Teredo
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "::10.0.0.1",  # IPv4-compatible
    "::127.0.0.1",
]

ALLOWED_BY_DEFAULT = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2a00:1450:4001:800::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("addr", DENIED_BY_DEFAULT)
def test_default_deny(addr):
    why = NetPolicy().check(addr)
    assert why is not None and "denied by default" in why


@pytest.mark.parametrize("addr", ALLOWED_BY_DEFAULT)
def test_global_addresses_allowed(addr):
    assert NetPolicy().check(addr) is None


def test_embedded_ipv4_extraction():
    assert str(embedded_ipv4(__import__("ipaddress").ip_address("::ffff:10.0.0.1"))) == "10.0.0.1"
    assert str(embedded_ipv4(__import__("ipaddress").ip_address("64:ff9b::a00:1"))) == "10.0.0.1"
    assert str(embedded_ipv4(__import__("ipaddress").ip_address("2002:a00:1::1"))) == "10.0.0.1"
    assert embedded_ipv4(__import__("ipaddress").ip_address("::1")) is None


def test_allow_overrides_default_deny():
    p = NetPolicy(allow=["10.0.0.0/8"])
    assert p.allowed("10.1.2.3")
    assert p.allowed("::ffff:10.1.2.3")  # the embedded form follows its IPv4 address
    assert p.allowed("64:ff9b::a01:203")
    assert not p.allowed("192.168.0.1")


def test_explicit_deny_beats_explicit_allow():
    p = NetPolicy(allow=["10.0.0.0/8"], deny=["10.0.0.1/32"])
    assert not p.allowed("10.0.0.1")
    assert "deny_networks" in (p.check("::ffff:10.0.0.1") or "")
    assert p.allowed("10.0.0.2")


def test_deny_adds_to_default():
    p = NetPolicy(deny=["8.8.8.0/24", "2606:4700::/32"])
    assert not p.allowed("8.8.8.8")
    assert not p.allowed("::ffff:8.8.8.8")
    assert not p.allowed("2606:4700:4700::1111")
    assert p.allowed("1.1.1.1")


def test_allow_loopback_host_only():
    p = NetPolicy(allow=["127.0.0.1/32"])
    assert p.allowed("127.0.0.1")
    assert p.allowed("::ffff:127.0.0.1")
    assert not p.allowed("127.0.0.2")
    assert not p.allowed("::1")


# -- enforcement by the Fetcher, on loopback only ----------------------------------------------------


def fetcher(allow=("127.0.0.1/32",), deny=()) -> Fetcher:
    return page_fetcher(FetchConfig(timeout=2.0, retries=0), SecurityConfig(tuple(allow), tuple(deny)))


def test_default_policy_blocks_loopback_without_connecting(origin):
    before = origin.connections
    out = fetcher(allow=()).fetch(origin.url("/page"))
    assert (out.ok, out.error) == (False, "blocked_address")
    assert "127.0.0.1" in (out.message or "")
    assert origin.connections == before


def test_allowed_loopback_fetches(origin):
    out = fetcher().fetch(origin.url("/page?size=2000"))
    assert (out.ok, out.text) == (True, page_text(2000))


def test_redirect_to_other_loopback_address_is_blocked(origin):
    target = f"http://127.0.0.2:{origin.port}/page"
    out = fetcher().fetch(origin.url(f"/redirect-to?url={target}"))
    assert (out.ok, out.error, out.final_url) == (False, "blocked_address", target)
    assert "127.0.0.2" in (out.message or "")


@pytest.mark.parametrize("target", ["http://[::1]:{port}/page", "http://[::ffff:127.0.0.2]:{port}/page"])
def test_redirect_to_ipv6_forms_blocked(origin, target):
    out = fetcher().fetch(origin.url(f"/redirect-to?url={target.format(port=origin.port)}"))
    assert out.error == "blocked_address"


def test_deny_beats_allow_in_fetcher(origin):
    before = origin.connections
    out = fetcher(allow=("127.0.0.0/8",), deny=("127.0.0.1/32",)).fetch(origin.url("/page"))
    assert out.error == "blocked_address" and "deny_networks" in (out.message or "")
    assert origin.connections == before


@pytest.fixture
def fake_dns(monkeypatch):
    """Names under .test resolve to what the test says; everything else goes to the real resolver."""
    real = socket.getaddrinfo
    answers: dict[str, list[list[str]]] = {}
    calls: list[str] = []

    def fake(host, port, *a, **kw):
        if isinstance(host, str) and host.endswith(".test"):
            calls.append(host)
            seq = answers[host]
            addrs = seq.pop(0) if len(seq) > 1 else seq[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in addrs]
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers, calls


def test_every_resolved_address_is_checked(origin, fake_dns):
    answers, _ = fake_dns
    answers["mixed.test"] = [["127.0.0.1", "127.0.0.2"]]
    before = origin.connections
    out = fetcher().fetch(f"http://mixed.test:{origin.port}/page")
    assert out.error == "blocked_address" and "127.0.0.2" in (out.message or "")
    assert origin.connections == before


def test_connects_to_vetted_address_with_host_name_kept(origin, fake_dns):
    """DNS rebinding: the first answer is vetted, a second lookup would say 127.0.0.2; there is none."""
    answers, calls = fake_dns
    answers["rebind.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    out = fetcher().fetch(f"http://rebind.test:{origin.port}/headers")
    assert out.ok, out
    assert f"Host: rebind.test:{origin.port}" in out.text
    assert calls == ["rebind.test"]  # resolved once, by us; urllib3 connected to the pinned IP


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory):
    import shutil

    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not available")
    cert, key = make_cert(str(tmp_path_factory.mktemp("tls")), "pinned.test")
    with start_origin(tls=(cert, key)) as o:
        yield o, cert


def test_tls_pinned_ip_keeps_sni_and_certificate_name(tls_origin, fake_dns):
    """We connect to the vetted IP, yet TLS verifies the certificate against the host name."""
    o, cert = tls_origin
    answers, calls = fake_dns
    answers["pinned.test"] = [["127.0.0.1"]]
    f = page_fetcher(FetchConfig(timeout=5.0, retries=0, ca_bundle=cert), SecurityConfig(("127.0.0.1/32",)))
    out = f.fetch(f"https://pinned.test:{o.port}/page?size=2000")
    assert (out.ok, out.text) == (True, page_text(2000)), out
    assert calls == ["pinned.test"]
    # The same server by IP: the certificate does not name 127.0.0.1, so verification must fail.
    out = f.fetch(f"https://127.0.0.1:{o.port}/page")
    assert out.error == "tls_error"
    f.close()


def test_tls_untrusted_certificate(tls_origin, fake_dns):
    o, _cert = tls_origin
    answers, _ = fake_dns
    answers["pinned.test"] = [["127.0.0.1"]]
    f = page_fetcher(FetchConfig(timeout=5.0, retries=0), SecurityConfig(("127.0.0.1/32",)))
    assert f.fetch(f"https://pinned.test:{o.port}/page").error == "tls_error"


@pytest.mark.parametrize("name, wire", [("dot.test.", "dot.test"), ("bücher.test", "xn--bcher-kva.test")])
def test_pinning_matches_the_name_urllib3_uses(origin, fake_dns, name, wire):
    answers, calls = fake_dns
    answers[wire] = [["127.0.0.1"]]
    answers[name] = [["127.0.0.1"]]
    out = fetcher().fetch(f"http://{name}:{origin.port}/page?size=1000")
    assert (out.ok, out.text) == (True, page_text(1000)), out
    assert len(calls) == 1
