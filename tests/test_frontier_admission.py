"""The Frontier on its own, with the two callbacks it is built with (``fail``, ``pump``) and no dispatcher:
cache answers, robots.txt waits and refusals, the per-host gate's order and limits, its timer, the
``timeout`` past ``max_wait``, and the retry after a 429."""

from __future__ import annotations

import asyncio
import time

import pytest

from shmfetch.config import CacheConfig, Config, FetchConfig, PolitenessConfig, RobotsConfig, SecurityConfig
from shmfetch.frontier.admission import Frontier
from shmfetch.job import Job
from shmfetch.protocol import master_frame

from .helpers import Origin
from .request_path import Recorder


class Calls:
    """What the frontier called back: failed jobs with their codes, and how many pumps."""

    def __init__(self) -> None:
        self.failed: list[tuple[Job, str, str | None]] = []
        self.pumps = 0

    def fail(self, job: Job, code: str, message: str | None = None) -> None:
        self.failed.append((job, code, message))

    def pump(self) -> None:
        self.pumps += 1


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def frontier(loop, calls: Calls, **sections) -> Frontier:
    return Frontier(Config(**sections), loop, calls.fail, calls.pump)


def result(job: Job, status: int = 200, ok: bool = True, **fields) -> dict:
    """A worker result frame for ``job``, strings as the UTF-8 bytes the master reads."""
    frame = master_frame(job.req_id, job.url, ok=ok, status=status, text=b"fetched", body_bytes=7, retries=0)
    frame.update(fields)
    return frame


def drain_ready(fr: Frontier) -> list[Job]:
    out = []
    while (job := fr.pop_ready()) is not None:
        out.append(job)
    return out


def test_admitted_jobs_come_out_per_host_in_order_within_the_per_host_limit(loop):
    calls, sink = Calls(), Recorder()
    fr = frontier(loop, calls, politeness=PolitenessConfig(per_host=1))
    a1, a2, b1 = (
        Job(sink, 1, "http://a.test/1"),
        Job(sink, 2, "http://a.test/2"),
        Job(sink, 3, "http://b.test/1"),
    )
    for job in (a1, a2, b1):
        fr.admit(job)
    assert calls.pumps == 3 and fr.waiting == 3
    assert drain_ready(fr) == [a1, b1]  # a2 waits: a1 holds a.test's one slot
    fr.release(a1, result(a1))
    assert drain_ready(fr) == [a2] and fr.waiting == 0
    assert calls.failed == [] and sink.frames == []


def test_a_host_delay_holds_the_next_job_and_the_timer_pumps_when_it_ends(loop):
    calls, sink = Calls(), Recorder()
    fr = frontier(loop, calls, politeness=PolitenessConfig(per_host=1, delay=0.3))
    a1, a2 = Job(sink, 1, "http://a.test/1"), Job(sink, 2, "http://a.test/2")
    fr.admit(a1)
    fr.admit(a2)
    assert drain_ready(fr) == [a1]
    fr.release(a1, result(a1))
    t0 = time.monotonic()
    assert drain_ready(fr) == []  # within the delay
    fr.schedule()
    pumps = calls.pumps
    loop.run_until_complete(asyncio.sleep(0.6))
    assert calls.pumps > pumps  # the timer asked for a pump when the delay ended
    assert drain_ready(fr) == [a2] and time.monotonic() - t0 >= 0.3


def test_a_job_waiting_past_max_wait_fails_with_timeout(loop):
    calls, sink = Calls(), Recorder()
    fr = frontier(loop, calls, politeness=PolitenessConfig(per_host=1, max_wait=0.2))
    a1, a2 = Job(sink, 1, "http://a.test/1"), Job(sink, 2, "http://a.test/2")
    fr.admit(a1)
    fr.admit(a2)
    assert drain_ready(fr) == [a1]
    fr.schedule()
    loop.run_until_complete(asyncio.sleep(0.5))
    assert calls.failed == [(a2, "timeout", "waited longer than [politeness] max_wait=0.2s for its host")]
    assert fr.waiting == 0


def test_a_429_is_retried_at_the_front_of_its_paused_host(loop):
    calls, sink = Calls(), Recorder()
    fr = frontier(loop, calls, politeness=PolitenessConfig(per_host=1, max_retry_after=0.2))
    a1, a2 = Job(sink, 1, "http://a.test/1"), Job(sink, 2, "http://a.test/2")
    fr.admit(a1)
    fr.admit(a2)
    (first,) = drain_ready(fr)
    assert fr.finished(first, result(first, status=429, ok=False, retry_after=0.2))  # kept for a retry
    assert fr.retries == 1 and a1.polite_retries == 1 and not a1.holds_host
    loop.run_until_complete(asyncio.sleep(0.4))
    assert drain_ready(fr) == [a1]  # ahead of a2


def test_a_fresh_cache_entry_answers_without_a_pump_and_a_stale_one_revalidates(loop, tmp_path):
    calls, sink = Calls(), Recorder()
    fr = frontier(loop, calls, cache=CacheConfig(path=str(tmp_path / "cache.db")))
    try:
        job = Job(sink, 1, "http://a.test/page")
        fr.admit(job)
        (out,) = drain_ready(fr)
        headers = {"cache_control": "max-age=3600", "etag": '"v1"'}
        assert not fr.finished(
            out, result(out, final_url=b"http://a.test/page", content_type=b"text/html", **headers)
        )
        pumps = calls.pumps
        again = Job(sink, 2, "http://a.test/page")
        fr.admit(again)
        assert calls.pumps == pumps and fr.waiting == 0  # answered here, never parked
        (frame,) = sink.frames
        assert frame["id"] == 2 and frame["cached"] and frame["text"] == "fetched"
        assert fr.stats()["cache"]["lookups"] == {"miss": 1, "hit": 1}
    finally:
        fr.close()


@pytest.fixture
def robots_origin():
    o = Origin()
    o.respond("/robots.txt", 200, b"User-agent: *\nDisallow: /private\n", delay=0.2)
    yield o
    o.stop()


def test_jobs_wait_for_robots_txt_then_a_disallowed_one_fails_and_the_others_go_on(loop, robots_origin):
    calls, sink = Calls(), Recorder()
    fr = frontier(
        loop, calls,
        robots=RobotsConfig(obey=True, timeout=5), fetch=FetchConfig(timeout=5),
        security=SecurityConfig(allow_networks=("127.0.0.1/32",)),
    )  # fmt: skip
    try:
        denied, allowed = (
            Job(sink, 1, robots_origin.url("/private/x")),
            Job(sink, 2, robots_origin.url("/ok")),
        )
        fr.admit(denied)
        fr.admit(allowed)
        assert fr.robots_waiting == 2 and calls.pumps == 0 and drain_ready(fr) == []

        async def until_decided() -> None:
            while fr.robots_waiting:
                await asyncio.sleep(0.02)

        loop.run_until_complete(asyncio.wait_for(until_decided(), 20))
        assert calls.failed == [(denied, "robots_denied", None)]
        assert calls.pumps == 1 and drain_ready(fr) == [allowed]
        late = Job(sink, 3, robots_origin.url("/private/y"))
        fr.admit(late)  # the rules are known now: refused at once
        assert calls.failed[-1][:2] == (late, "robots_denied")
    finally:
        fr.close()


def test_drain_takes_out_every_job_held(loop):
    calls, sink = Calls(), Recorder()
    fr = frontier(loop, calls, politeness=PolitenessConfig(per_host=1))
    jobs = [Job(sink, i, f"http://a.test/{i}") for i in range(3)]
    for job in jobs:
        fr.admit(job)
    drain_ready(fr)
    assert sorted(j.req_id for j in fr.drain()) == [1, 2] and fr.waiting == 0
