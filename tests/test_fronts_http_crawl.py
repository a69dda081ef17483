"""POST /crawl through a real daemon's HTTP API: the NDJSON stream (one line per page, then the
summary), the bearer token as for /fetch, and refusals as 400 with a JSON error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from shmfetch.testing import crawlsite
from shmfetch.testing.origin import Origin

from .helpers import http_api_daemon

TOKEN = "crawl-0123456789abcdef-XYZ"


def api_with_token(tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return http_api_daemon(tmp_path, security={"allow_networks": "127.0.0.0/8"}, token_file=token_file)


@pytest.mark.slow
def test_post_crawl_streams_ndjson_with_the_token(tmp_path: Path) -> None:
    a, b, a2 = Origin(host="127.0.0.1"), Origin(host="127.0.0.2"), Origin(host="127.0.0.1")
    try:
        crawlsite.serve(a, b, a2)
        with api_with_token(tmp_path) as base:
            body = {"seeds": [a.url("/")], "depth": 1, "options": {"mode": "text"}}
            assert requests.post(base + "/crawl", json=body, timeout=30).status_code == 401
            assert not crawlsite.fetched(a)  # refused before anything was queued
            auth = {"Authorization": f"Bearer {TOKEN}"}
            r = requests.post(base + "/crawl", json=body, headers=auth, timeout=60, stream=True)
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in r.iter_lines() if line]
            summary = lines.pop()["summary"]
            assert summary["ok"] == 5 and summary["limit"] == "depth"
            assert {x["url"] for x in lines} == {a.url(p) for p in ("/", "/a", "/b", "/c?x=1&y=2", "/docs/")}
            assert {x["crawl_depth"] for x in lines} == {0, 1} and all("referrer" in x for x in lines)
            for bad, words in (
                ({"seeds": []}, "at least one seed"),
                ({"seeds": [a.url("/")], "depth": -1}, "'depth' = -1"),
                ({"seeds": [a.url("/")], "include": ["("]}, "bad regex"),
                ({"seeds": [a.url("/")], "options": {"mode": "poem"}}, "'mode'"),
            ):
                r = requests.post(base + "/crawl", json=bad, headers=auth, timeout=30)
                assert r.status_code == 400 and words in r.json()["message"], (bad, r.text)
            r = requests.post(base + "/crawl", data=b"not json", headers=auth, timeout=30)
            assert r.status_code == 400 and r.json()["error"] == "bad_request"
    finally:
        for o in (a, b, a2):
            o.stop()
