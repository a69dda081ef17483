"""URLs no daemon accepts are answered by the clients themselves, so that one of them never costs the rest
of a batch: a URL longer than max_frame_bytes used to close the connection under every other request."""

from __future__ import annotations

import asyncio
import json

import pytest

from shmfetch import AsyncClient, Client
from shmfetch.options import MAX_URL_CHARS

from .helpers import daemon_stats, page_text, run_cli, running_daemon, wait_for

HUGE = "http://127.0.0.1/" + "a" * 2_000_000  # over the default max_frame_bytes (1 MiB)
LONG = "http://127.0.0.1/" + "b" * MAX_URL_CHARS  # over the URL limit, under max_frame_bytes


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with running_daemon(tmp_path_factory.mktemp("refusals")) as d:
        wait_for(lambda: all(w["ready"] for w in daemon_stats(d.socket)["workers"]), what="workers ready")
        yield d


def test_a_url_over_max_frame_bytes_does_not_abort_a_submit_batch(daemon, origin):
    urls = [origin.url(f"/page/{i}") for i in range(6)]
    batch = urls[:3] + [HUGE] + urls[3:5] + [LONG] + urls[5:]
    p = run_cli("submit", "--json", "--socket", daemon.socket, "-", stdin="\n".join(batch) + "\n", timeout=60)
    assert p.returncode == 1, p.stderr[-2000:]
    assert p.stderr == ""
    got = {r["url"]: r for r in map(json.loads, p.stdout.splitlines())}
    assert len(got) == 8
    for i, u in enumerate(urls):
        assert got[u]["ok"] and got[u]["text"] == page_text(i)
    for u in (HUGE, LONG):
        assert (got[u]["ok"], got[u]["error"]) == (False, "invalid_url")
        assert str(MAX_URL_CHARS) in got[u]["message"]


def test_client_fetch_answers_a_huge_url_and_the_connection_goes_on(daemon, origin):
    with Client(daemon.socket, timeout=30) as c:
        bad = c.fetch(HUGE, mode="text")
        good = c.fetch(origin.url("/page/4"))
        only_bad = list(c.fetch_many([HUGE, LONG], concurrency=1))
    assert (bad.ok, bad.error, bad.url) == (False, "invalid_url", HUGE)
    assert good.ok and good.text == page_text(4)
    assert [r.error for r in only_bad] == ["invalid_url", "invalid_url"]


def test_async_client_answers_a_huge_url_and_the_connection_goes_on(daemon, origin):
    async def run():
        async with await AsyncClient.connect(daemon.socket) as c:
            bad = await c.fetch(HUGE)
            rest = [r async for r in c.fetch_many([origin.url("/page/5"), LONG], concurrency=2)]
            return bad, rest

    bad, rest = asyncio.run(asyncio.wait_for(run(), 30))
    assert (bad.ok, bad.error) == (False, "invalid_url")
    assert sorted((r.ok, r.error) for r in rest) == [(False, "invalid_url"), (True, None)]


def test_a_malformed_option_is_answered_without_sending_and_the_connection_goes_on(daemon, origin):
    """A 2 MB Accept-Language made a frame over max_frame_bytes: the daemon closed the connection."""
    with Client(daemon.socket, timeout=30) as c:
        huge = c.fetch(origin.url("/page/1"), accept_language="x" * 2_000_000)
        unknown = c.fetch(origin.url("/page/1"), colour="blue")
        good = c.fetch(origin.url("/page/2"), timeout=1)
    assert (huge.ok, huge.error) == (False, "bad_request") and "accept_language" in huge.message
    assert (unknown.ok, unknown.error) == (False, "bad_request") and "colour" in unknown.message
    assert good.ok and good.text == page_text(2)
