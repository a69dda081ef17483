"""Every hostile origin case through a real daemon at once: exact codes, no worker lost, then a normal page.

The fetch-level tests (test_fetch_fetcher.py) pin each case down in one process; this one proves the daemon as a
whole survives them side by side: no worker dies or is respawned, the count is exactly the successes, and
the workers' peak memory stays bounded while bombs, drips and endless bodies are in flight together.
"""

from __future__ import annotations

import time
import urllib.parse

import pytest

from shmfetch.api.client import Client
from shmfetch.testing.origin import EXTRACT_CASES, SAMPLES, page_text, start_origin

from .helpers import proc_kib, running_daemon

DECODED_CAP = 8 << 20


def _cases(o) -> list[tuple[str, str | None, str | None]]:
    """(url, expected error code or None for ok, expected text or None to skip the text check)."""
    blocked = f"http://127.0.0.2:{o.port}/page"
    cases: list[tuple[str, str | None, str | None]] = [
        (o.url("/drip?n=100&delay=0.3"), "timeout", None),
        (o.url("/drip-headers?delay=0.3"), "timeout", None),
        (o.url("/gzip-bomb?mb=10"), "too_large", ""),
        (o.url("/br-bomb?gb=10"), "too_large", ""),
        (o.url("/endless"), "too_large", None),
        (o.url("/redirect-loop"), "too_many_redirects", None),
        (o.url("/redirect-to?url=" + urllib.parse.quote(blocked, safe="")), "blocked_address", None),
        (o.url("/flaky?key=d503&fails=1"), None, "finally"),
        (o.url("/retry-after?key=d429&after=1"), None, "welcome back"),
        (o.url("/reset?key=drst&fails=1"), None, "recovered"),
        (o.url("/close-early"), "connect_error", None),
        (o.url("/binary-html"), "decode_error", None),
        (o.url("/ctype/pdf"), "decode_error", None),  # bytes after %PDF- that are no PDF
        (o.url("/ctype/png"), "unsupported_content_type", None),
        (o.url("/status/404"), "http_status", "status 404"),
        (f"https://127.0.0.1:{o.port}/page", "tls_error", None),
        ("ftp://127.0.0.1/x", "unsupported_scheme", None),
        ("http://", "invalid_url", None),
        (o.url("/page?size=50000"), None, page_text(50000)),
    ]
    for enc in SAMPLES:
        for mode in ("header", "meta", "none"):
            cases.append((o.url(f"/charset?enc={enc}&mode={mode}"), None, "Title\n" + SAMPLES[enc]))
    for name, (_, text) in EXTRACT_CASES.items():
        cases.append((o.url(f"/extract/{name}"), None, text))
    return cases


@pytest.mark.slow
def test_all_hostile_cases_at_once_then_a_normal_page(tmp_path):
    with (
        start_origin() as o,
        running_daemon(
            tmp_path,
            daemon={"workers": 2, "threads": 8},
            fetch={"timeout": 3, "max_decoded_bytes": DECODED_CAP, "max_bytes": 32 << 20},
        ) as d,
    ):
        workers = d.worker_pids()
        cases = _cases(o)
        by_url = {}
        with Client(d.socket, timeout=60) as c:
            t0 = time.monotonic()
            for r in c.fetch_many([u for u, _, _ in cases], concurrency=len(cases)):
                by_url[r.url] = r
            took = time.monotonic() - t0
            peak_mib = max(proc_kib(p, "VmHWM") for p in workers) / 1024
            print(f"\n{len(cases)} hostile cases in {took:.1f} s; worst worker peak RSS {peak_mib:.0f} MiB")
            stats = c.stats()
            normal = c.fetch(o.url("/page/7"))
        assert len(by_url) == len(cases)
        wrong = []
        for url, code, text in cases:
            r = by_url[url]
            if r.error != code or (code is None) != r.ok or (text is not None and r.text != text):
                wrong.append((url, code, r.error, r.message, (r.text or "")[:80]))
        assert not wrong, wrong
        assert took < 20, "a hostile case held a worker past its deadline"
        # Two workers, eight threads, bombs capped at 8 MiB decoded each: far below one unbounded bomb (10 GB).
        assert peak_mib < 400
        assert [w["restarts"] for w in stats["workers"]] == [0, 0], "a hostile page crashed a worker"
        assert sorted(d.worker_pids()) == sorted(workers)
        assert normal.ok and normal.text == "Page 7\nThis is page number 7."
        oks = sum(1 for r in by_url.values() if r.ok) + 1
        code, out = d.stop()
    assert code == 0 and d.last_line() == f"downloaded {oks} URLs"
