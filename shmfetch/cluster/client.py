"""Callers' side of the cluster: ``RedisClient`` (the ``Client`` surface over Redis), ``enqueue``, and
``read_results`` for ``shmfetch results``.

``RedisClient`` enqueues each URL with ``reply_to`` set to a private stream (``<jobs>:reply:<random>``)
and reads its results there, so it never sees anybody else's; the stream is deleted on ``close``.

    with RedisClient("redis://127.0.0.1:6379/0") as c:
        page = c.fetch("http://127.0.0.1:8000/")
        for r in c.fetch_many(urls, concurrency=64):
            print(r.url, r.ok, len(r.text))
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis

from ..options import url_problem
from ..protocol import Result, error_frame
from . import streams

ENQUEUE_BATCH = 1000
READ_BATCH = 1000
BLOCK_MS = 1000
RETRY_BASE_S, RETRY_CAP_S = 0.2, 5.0  # a follower's backoff while Redis is unreachable


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=BLOCK_MS / 1000 + 10)


def enqueue(
    r: redis.Redis,
    jobs: str,
    urls: Iterable[str],
    reply_to: str | None = None,
    first_id: int | None = None,
    options: dict[str, Any] | None = None,
) -> Iterator[str]:
    """Append one job per URL to ``jobs``, pipelined; yield the entry ids in order.

    With ``first_id`` the jobs get client ids ``first_id, first_id + 1, ...``; ``options`` (the per-request
    options of shmfetch/options.py) go with every job.
    """
    ids = itertools.count(first_id) if first_id is not None else itertools.repeat(None)
    it = iter(urls)
    while batch := list(itertools.islice(it, ENQUEUE_BATCH)):
        pipe = r.pipeline(transaction=False)
        for url, job_id in zip(batch, ids, strict=False):
            pipe.xadd(jobs, streams.job_fields(url, job_id, reply_to, options))
        for eid in pipe.execute():
            yield eid.decode()


def read_results(
    r: redis.Redis, stream: str, follow: bool = False, report: Callable[[str], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Every result in ``stream`` from its start (``streams.parse_result`` dicts); with ``follow``, then
    wait for new ones until interrupted.

    A follower outlives a Redis restart or outage: once it has read from Redis, a lost connection is
    retried with backoff (``report`` is told so), and reading resumes after the last entry yielded, so no
    entry is skipped and none is yielded twice. Without ``follow`` an error ends the read.
    """
    cursor = "0-0"  # XREAD returns the entries after it: the last one yielded
    failures, connected = 0, False
    while True:
        try:
            reply = r.xread({stream: cursor}, count=READ_BATCH, block=BLOCK_MS if follow else None)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            if not (follow and connected):
                raise
            failures += 1
            delay = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (failures - 1))
            if report is not None:
                report(f"lost Redis ({e}); retrying in {delay:g} s, then resuming after entry {cursor}")
            time.sleep(delay)
            continue
        if failures and report is not None:
            report(f"Redis is back; resuming after entry {cursor}")
        failures, connected = 0, True
        entries = reply[0][1] if reply else []
        if not entries and not follow:
            return
        for eid, fields in entries:
            cursor = eid.decode()
            yield streams.parse_result(fields)


class RedisClient:
    """The ``shmfetch.Client`` surface (``fetch``, ``fetch_many``) through the daemons of a cluster.

    ``timeout`` bounds the wait for each result (None: wait as long as it takes; a job whose daemon dies is
    reclaimed by another after ``claim_idle``). Not thread-safe: one per thread.
    """

    def __init__(self, url: str, jobs: str = streams.DEFAULT_JOBS, timeout: float | None = None):
        self.redis = connect(url)
        self.jobs = jobs
        self.timeout = timeout
        self.reply_to = f"{jobs}:reply:{uuid.uuid4().hex}"
        self._ids = itertools.count(1)
        self._cursor = "0-0"

    def __enter__(self) -> RedisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.redis.delete(self.reply_to)
        finally:
            self.redis.close()

    def fetch(self, url: str, **options: Any) -> Result:
        """Fetch one URL through the cluster and wait for its result; ``options`` as for ``Client.fetch``."""
        return next(self.fetch_many([url], concurrency=1, **options))

    def fetch_many(self, urls: Iterable[str], concurrency: int = 64, **options: Any) -> Iterator[Result]:
        """Enqueue at most ``concurrency`` URLs ahead of their results; yield results in completion order.
        ``options`` (mode, metadata, links, timeout, accept_language, max_bytes) go with every URL. A URL
        every daemon refuses (``options.url_problem``) is answered ``invalid_url`` here, not enqueued."""
        it = iter(urls)
        waiting = 0
        while True:
            more = list(itertools.islice(it, max(0, concurrency - waiting)))
            send = []
            for url in more:
                if (problem := url_problem(url)) is not None:
                    yield Result.from_frame(error_frame(None, "invalid_url", problem, url=url))
                else:
                    send.append(url)
            if send:
                first = next(self._ids)
                self._ids = itertools.count(first + len(send))
                waiting += sum(
                    1 for _ in enqueue(self.redis, self.jobs, send, self.reply_to, first, options or None)
                )
            if not waiting:
                if more:
                    continue
                return
            for frame in self._next_results():
                waiting -= 1
                yield Result.from_frame(frame)

    def _next_results(self) -> list[dict[str, Any]]:
        """The next results on the private stream (at least one), waiting up to ``timeout``."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            reply = self.redis.xread({self.reply_to: self._cursor}, count=READ_BATCH, block=BLOCK_MS)
            out = []
            for _stream, entries in reply or []:
                for eid, fields in entries:
                    self._cursor = eid.decode()
                    out.append(streams.parse_result(fields))
            if out:
                return out
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no result on {self.reply_to} within {self.timeout}s")
