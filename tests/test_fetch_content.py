"""Content-Encoding decoding under attack: stacked codings, data after a stream's end, the deadline.

Every stage of a stacked Content-Encoding is bounded, not only the last: data after the end of any stage's
stream is a decode_error (CPython kept it in the stage's ``unused_data``, uncapped and copied over and over),
what an inner stage is fed counts against ``max_decoded_bytes``, and the deadline is checked while
decoding. Through a Fetcher and through the master's robots.txt prefix read.
"""

from __future__ import annotations

import gzip
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli
import pytest

from shmfetch import Client
from shmfetch.config import FetchConfig, SecurityConfig
from shmfetch.extract.page import page_fetcher
from shmfetch.fetch.content import ContentError, Decoder
from shmfetch.testing.origin import Origin, page_html, page_text, start_origin

from .helpers import (
    origin_fixture,  # noqa: F401 (origin is a fixture)
    proc_kib,
    running_daemon,
)

LOOPBACK = SecurityConfig(allow_networks=("127.0.0.1/32",))
CAP = 8 << 20  # max_decoded_bytes of these fetches
TRAILING = 256 << 20  # zeros after the inner stream's end: far past CAP
ZEROS = bytes(1 << 20)


def _gzip_stream(parts: Iterator[bytes]) -> bytes:
    """gzip of the concatenated ``parts``, compressed piece by piece (never all of it in memory)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join([c.compress(p) for p in parts] + [c.flush()])


def _br_stream(parts: Iterator[bytes]) -> bytes:
    c = brotli.Compressor(quality=5)
    return b"".join([c.process(p) for p in parts] + [c.finish()])


def _inner_then_trailing(inner: bytes, trailing: int) -> Iterator[bytes]:
    yield inner
    for _ in range(trailing // len(ZEROS)):
        yield ZEROS


@pytest.fixture(scope="module")
def bodies() -> dict[str, bytes]:
    inner = gzip.compress(page_html(2000).encode())
    return {
        # A complete inner gzip stream, then 256 MiB of zeros after its end, all gzipped again: ~256 KB.
        "gzip, gzip": _gzip_stream(_inner_then_trailing(inner, TRAILING)),
        # The same under brotli: a few hundred bytes.
        "gzip, br": _br_stream(_inner_then_trailing(inner, TRAILING)),
        # A raw deflate stream of empty stored blocks (each 5 bytes in, nothing out), 64 MiB of them,
        # gzipped: the inner stage never ends and never outputs, it is only fed.
        "deflate, gzip": _gzip_stream(b"\x00\x00\x00\xff\xff" * (1 << 20) for _ in range(13)),
    }


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM back to the current RSS (Linux >= 4.0)


def _fetch_measured(origin: Origin, path: str, body: bytes, coding: str) -> tuple[object, float, float]:
    """Fetch ``body`` served with ``coding``: (outcome, seconds, MiB the peak RSS grew)."""
    origin.respond(path, 200, body, {"Content-Type": "text/html", "Content-Encoding": coding})
    fetcher = page_fetcher(FetchConfig(timeout=10.0, retries=0, max_decoded_bytes=CAP), LOOPBACK)
    try:
        _reset_hwm()
        before = proc_kib("self", "VmHWM")
        t0 = time.monotonic()
        out = fetcher.fetch(origin.url(path))
        took = time.monotonic() - t0
        return out, took, (proc_kib("self", "VmHWM") - before) / 1024
    finally:
        fetcher.close()


@pytest.mark.parametrize("coding", ["gzip, gzip", "gzip, br"])
def test_data_after_an_inner_stream_is_refused_at_once(origin, bodies, coding):
    out, took, grew = _fetch_measured(origin, "/after-inner-" + coding.replace(", ", "-"), bodies[coding], coding)
    assert (out.ok, out.error, out.text) == (False, "decode_error", "")
    assert out.message == "data after the end of the compressed stream (gzip)"
    assert took < 3.0, took  # the old decoder took 20 s and more, copying the trailing data
    assert grew < (CAP >> 20) + 20, grew  # it held all of it too: 256 MiB


def test_what_an_inner_stage_is_fed_counts_against_the_cap(origin, bodies):
    out, took, grew = _fetch_measured(origin, "/fed-inner", bodies["deflate, gzip"], "deflate, gzip")
    assert (out.ok, out.error) == (False, "too_large")
    assert out.message == f"decoded body exceeds max_decoded_bytes={CAP}"
    assert took < 3.0 and grew < (CAP >> 20) + 20, (took, grew)


def test_data_after_a_gzip_body_is_a_decode_error(origin):
    body = gzip.compress(page_html(2000).encode()) + b"trailing garbage"
    origin.respond("/gzip-trailing", 200, body, {"Content-Type": "text/html", "Content-Encoding": "gzip"})
    fetcher = page_fetcher(FetchConfig(timeout=5.0, retries=0), LOOPBACK)
    out = fetcher.fetch(origin.url("/gzip-trailing"))
    fetcher.close()
    assert (out.ok, out.error) == (False, "decode_error")
    assert out.message == "data after the end of the compressed stream (gzip)"


def test_a_complete_stacked_body_still_decodes(origin):
    body = zlib.compress(gzip.compress(page_html(2000).encode()))
    origin.respond("/stacked-ok", 200, body, {"Content-Type": "text/html", "Content-Encoding": "gzip, deflate"})
    fetcher = page_fetcher(FetchConfig(timeout=5.0, retries=0), LOOPBACK)
    out = fetcher.fetch(origin.url("/stacked-ok"))
    fetcher.close()
    assert (out.ok, out.text) == (True, page_text(2000))


def test_the_deadline_is_checked_while_decoding():
    data = gzip.compress(bytes(4 << 20))
    with pytest.raises(ContentError) as e:
        Decoder(["gzip"], 64 << 20, deadline=time.monotonic() - 1).feed_into(data, bytearray())
    assert (e.value.code, str(e.value)) == ("timeout", "decoding the body did not finish within the timeout")


def test_a_prefix_read_stops_when_an_inner_stage_is_fed_its_limit():
    # A truncating decoder (sniffing, robots.txt) is full once a stage was fed ``limit`` bytes, so its
    # reader stops reading the wire instead of feeding it in for nothing.
    dec = Decoder(["deflate", "gzip"], 1000, truncate=True)
    out = bytearray()
    dec.feed_into(_gzip_stream(b"\x00\x00\x00\xff\xff" * 1000 for _ in range(2)), out)
    assert (bytes(out), dec.full) == (b"", True)


def test_robots_prefix_read_in_the_master_stays_bounded(tmp_path: Path, bodies):
    """The master reads robots.txt with the same decoder: a stacked bomb costs it neither memory nor its
    event loop (it held 256 MiB per file and stalled ``stats``)."""
    with start_origin() as site, running_daemon(tmp_path, robots={"obey": "true", "timeout": 5.0}) as d:
        site.respond("/robots.txt", 200, bodies["gzip, gzip"], {"Content-Encoding": "gzip, gzip"})
        before = proc_kib(d.pid, "VmHWM")
        t0 = time.monotonic()
        with Client(d.socket, timeout=60) as c:
            out = c.fetch(site.url("/page/1"))
        took = time.monotonic() - t0
        grew = (proc_kib(d.pid, "VmHWM") - before) / 1024
    assert out.error == "robots_denied"  # an undecodable robots.txt is unreachable: disallow all
    assert took < 5.0, took
    assert grew < 64, f"the master's peak RSS grew by {grew:.0f} MiB"
