"""Every error message the Fetcher produces is for people: what failed, where, after how long.

No class names, no library wrappers, no float noise: ``no response from 127.0.0.1:PORT within 1 s``.
Each message is asserted exactly, against real sockets on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from shmfetch.config import FetchConfig, SecurityConfig
from shmfetch.extract import page as page_mod
from shmfetch.extract.page import page_fetcher
from shmfetch.fetch.fetcher import Fetcher
from shmfetch.testing.net import free_port as closed_port  # nothing listens on a free port
from shmfetch.testing.origin import make_cert, start_origin

from .helpers import origin_fixture  # noqa: F401 (origin is a fixture)

LOOPBACK = SecurityConfig(allow_networks=("127.0.0.1/32",))
# What the old messages carried: class names (ReadTimeout, _PinnedHTTPPool, SSLCertVerificationError),
# reprs, [Errno -2], and the remaining seconds as a float (read timeout=9.999561629000027).
NOISE = re.compile(r"[A-Z][a-z]+[A-Z]\w*|_[A-Z]\w+|\[Errno|\d\.\d{4,}|\w+\(")


def make(timeout: float = 1.0) -> Fetcher:
    return page_fetcher(FetchConfig(timeout=timeout, retries=0), LOOPBACK)


def fetch(url: str, timeout: float = 1.0) -> tuple[str | None, str]:
    f = make(timeout)
    try:
        out = f.fetch(url)
    finally:
        f.close()
    assert not NOISE.search(out.message or ""), out.message
    return out.error, out.message or ""


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port whose connections are accepted by the kernel (backlog) and never answered."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@contextlib.contextmanager
def not_http_server() -> Iterator[int]:
    """A port that answers every request with a line that is not HTTP."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = s.accept()
            except OSError:
                continue
            with c:
                c.settimeout(2)
                with contextlib.suppress(OSError):
                    c.recv(4096)
                    c.sendall(b"HELLO THERE\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield s.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        s.close()


@pytest.mark.parametrize("timeout, said", [(1.0, "1 s"), (0.5, "0.5 s")])
def test_no_response(timeout, said):
    with silent_server() as port:
        assert fetch(f"http://127.0.0.1:{port}/", timeout) == (
            "timeout", f"no response from 127.0.0.1:{port} within {said}"
        )  # fmt: skip


def test_headers_dripping_past_the_deadline_are_no_response(origin):
    assert fetch(origin.url("/drip-headers?delay=0.05")) == (
        "timeout", f"no response from 127.0.0.1:{origin.port} within 1 s"
    )  # fmt: skip


def test_body_dripping_past_the_deadline(origin):
    assert fetch(origin.url("/drip?n=100&delay=0.2")) == (
        "timeout", f"the body from 127.0.0.1:{origin.port} did not arrive within 1 s"
    )  # fmt: skip


def test_dns_lookup_past_the_deadline(monkeypatch):
    real = socket.getaddrinfo

    def slow(host, *a, **kw):
        if host == "slow-dns.test":
            time.sleep(1.0)  # bounded: the parked resolver thread ends soon after the test
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure")
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    assert fetch("http://slow-dns.test/", 0.5) == ("timeout", "DNS lookup of slow-dns.test did not finish within 0.5 s")


def test_no_extraction_slot_within_the_deadline(origin):
    gate, held = page_mod.EXTRACT_GATE, 0
    while gate.try_acquire():
        held += 1
    try:
        got = fetch(origin.url("/page?size=2000"))
    finally:
        for _ in range(held):
            gate.release()
    assert got == ("timeout", f"no extraction slot was free for the page from 127.0.0.1:{origin.port} within 1 s")


def test_connection_refused():
    port = closed_port()
    assert fetch(f"http://127.0.0.1:{port}/") == ("connect_error", f"connection refused: 127.0.0.1:{port}")


def test_connection_reset(origin):
    assert fetch(origin.url("/reset")) == ("connect_error", f"127.0.0.1:{origin.port} reset the connection")


def test_not_http():
    with not_http_server() as port:
        assert fetch(f"http://127.0.0.1:{port}/") == ("connect_error", f"127.0.0.1:{port} did not answer in HTTP")


def test_untrusted_certificate(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not available")
    cert, key = make_cert(str(tmp_path), "localhost")
    with start_origin(tls=(cert, key)) as o:
        assert fetch(o.url("/page")) == (
            "tls_error", f"TLS with 127.0.0.1:{o.port} failed: certificate verify failed: self-signed certificate"
        )  # fmt: skip


def test_dns_failure_has_no_errno():
    code, msg = fetch("http://no-such-host.test/")
    assert code == "dns_error" and msg.startswith("cannot resolve no-such-host.test: "), msg


def test_corrupt_compressed_bodies(origin):
    assert fetch(origin.url("/bad-encoding?coding=br")) == (
        "decode_error", "corrupt compressed body: not a valid brotli stream"
    )  # fmt: skip
    code, msg = fetch(origin.url("/bad-encoding?coding=gzip"))
    assert code == "decode_error" and msg.startswith("corrupt compressed body: ") and "Error -" not in msg, msg


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://x:0/", "URL has port 0"),
        ("http:///x", "URL has no host"),
        ("ftp://x/", "scheme 'ftp' is not fetched (only http, https)"),
        ("http://" + "a" * 70 + ".test/", "bad host name '" + "a" * 70 + ".test': label empty or too long"),
    ],
)
def test_invalid_urls(url, message):
    code, msg = fetch(url)
    assert (code in ("invalid_url", "unsupported_scheme"), msg) == (True, message)


def test_unexpected_exception_says_what_without_its_class(origin, monkeypatch):
    def boom(*a, **kw):
        raise RuntimeError("extractor exploded")

    monkeypatch.setattr(page_mod, "html_text", boom)
    assert fetch(origin.url("/page?size=1000")) == ("internal_error", "the fetch failed unexpectedly: extractor exploded")
