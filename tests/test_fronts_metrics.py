"""GET /metrics on the HTTP API: Prometheus text, parsed with prometheus_client's own parser."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shmfetch import Client

from .helpers import daemon_stats, free_port, running_daemon

EXPECTED = {
    "shmfetch_requests", "shmfetch_fetch_duration_seconds", "shmfetch_response_bytes", "shmfetch_retries",
    "shmfetch_queue_depth", "shmfetch_inflight_requests", "shmfetch_workers_alive", "shmfetch_robots_denied",
    "shmfetch_cache_lookups", "shmfetch_build_info", "shmfetch_downloads", "shmfetch_http_rejected",
}  # fmt: skip


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out = {}
    families = set()
    for fam in text_string_to_metric_families(text):
        families.add(fam.name)
        for s in fam.samples:
            assert not {"url", "host"} & set(s.labels), s  # no high-cardinality labels
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert EXPECTED <= families, EXPECTED - families
    return out


@pytest.mark.slow
def test_metrics_agree_with_stats_and_with_what_was_sent(tmp_path, origin):
    port = free_port()
    n_ok, n_404 = 12, 3
    cached = origin.url("/cacheable?key=metrics&cc=max-age%3D600")
    urls = [origin.url(f"/page/{i}") for i in range(n_ok)] + [origin.url("/status/404")] * n_404
    with running_daemon(
        tmp_path, http={"listen": f"127.0.0.1:{port}"}, cache={"path": tmp_path / "cache.db"}
    ) as d:
        with Client(d.socket, timeout=30) as c:
            results = list(c.fetch_many(urls))
            assert c.fetch(cached).ok and c.fetch(cached).cached
        m = scrape(port)
        st = daemon_stats(d.socket)
    assert sum(r.ok for r in results) == n_ok
    ok = m[("shmfetch_requests_total", (("outcome", "ok"),))]
    assert ok == n_ok + 2 == st["ok_delivered"] + st["frontier"]["cache"]["answers"]
    assert (
        m[("shmfetch_requests_total", (("outcome", "http_status"),))]
        == n_404
        == st["failures"]["http_status"]
    )
    fetches = n_ok + n_404 + 1  # the cache hit went to no worker
    assert m[("shmfetch_fetch_duration_seconds_count", ())] == fetches
    assert m[("shmfetch_fetch_duration_seconds_bucket", (("le", "+Inf"),))] == fetches
    assert m[("shmfetch_fetch_duration_seconds_sum", ())] > 0
    assert m[("shmfetch_response_bytes_total", ())] == st["frontier"]["response_bytes"] > 0
    assert m[("shmfetch_downloads_total", ())] == st["downloaded"] == n_ok + 1
    assert m[("shmfetch_workers_alive", ())] == 2
    assert m[("shmfetch_queue_depth", ())] == 0 and m[("shmfetch_inflight_requests", ())] == 0
    assert m[("shmfetch_cache_lookups_total", (("result", "hit"),))] == 1
    assert m[("shmfetch_cache_lookups_total", (("result", "miss"),))] == fetches  # every URL, once
    assert m[("shmfetch_robots_denied_total", ())] == 0
    assert m[("shmfetch_retries_total", ())] == st["retries"]
    info = [k for k in m if k[0] == "shmfetch_build_info"]
    assert len(info) == 1 and ("version", "0.1.0") in info[0][1]
