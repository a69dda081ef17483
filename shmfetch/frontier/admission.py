"""The master's admission path: HTTP cache, robots.txt and per-host politeness, between intake and dispatch.

A request the Dispatcher accepts goes through, in this order:

  1. the HTTP cache (cache.py, if ``[cache] path``): a fresh entry is answered here, ``cached: true``, and
     never reaches a worker; a stale one with validators makes the fetch conditional;
  2. robots.txt (robots.py, if ``[robots] obey``, or for a job that asks for it: a crawl's page): a
     disallowed URL is answered ``robots_denied``; while the origin's robots.txt is being fetched the
     request waits here;
  3. the per-host gate (politeness.py): the request waits until its host may start a fetch, or past its
     deadline (``[politeness] max_wait`` after it arrived) is answered ``timeout``.

The Dispatcher calls ``admit`` on intake, ``pop_ready`` when a worker can take a job, ``finished`` for each
result (which may keep the job for a retry after a 429/503 pause, or answer a 304 from the cache), and
``drain`` at shutdown. The frontier calls back through two callables it is built with: ``fail`` (answer a
job with an error code: ``robots_denied``, a ``timeout`` waiting for its host) and ``pump`` (jobs may have
become ready: dispatch what can go). It knows nothing of workers. Everything runs on the master's event
loop thread, except robots.txt fetches, which run in robots.py's own threads and come back through the
loop.

Counting: a cache hit (or a 304 answered from the cache) is a download for the SIGUSR1 count only with
``[cache] count_hits = true``; ``counted_hits`` holds how many were counted that way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..job import Job, answer, text
from ..protocol import CACHED_FIELDS, OPT_IF_MODIFIED_SINCE, OPT_IF_NONE_MATCH, master_frame
from .cache import HEADER_FIELDS, Entry, HttpCache, cache_key, open_cache
from .politeness import PAUSE_CODES, Politeness, host_of
from .robots import ALLOW, DENY, Robots, Rules, origin_of

log = logging.getLogger("shmfetch.master")

# Request options that change what a fetch returns beyond its text in one mode: not served from the cache.
UNCACHED_OPTIONS = frozenset(("accept_language", "max_bytes"))
# Result fields (protocol.Outcome) the cache stores, and takes freshness and validators from.
CACHE_HEADERS = HEADER_FIELDS

Fail = Callable[..., None]  # fail(job, code, message=None): answer the job with an error code
Pump = Callable[[], None]  # dispatch whatever can go now


class Frontier:
    """Cache, robots and politeness in front of the dispatch. See the module docstring."""

    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop, fail: Fail, pump: Pump):
        p = cfg.politeness
        self.fail = fail
        self.pump = pump
        self.loop = loop
        self.max_wait = p.max_wait
        self.max_retries = cfg.fetch.retries
        self.default_mode = cfg.fetch.mode  # the cache key's mode for a request that names none
        self.default_metadata = cfg.fetch.metadata
        self.gate = Politeness(p.per_host, p.delay, p.max_retry_after, p.backoff, p.max_hosts)
        self.cache: HttpCache | None = open_cache(cfg.cache)
        self.count_hits = cfg.cache.count_hits
        self.robots: Robots | None = None
        self.obey_robots = cfg.robots.obey  # for every job; else only for a job that asks (a crawl's page)
        self._robots_cfg = cfg
        if cfg.robots.obey:
            self._start_robots()
        self._robots_wait: defaultdict[str, list[Job]] = defaultdict(list)
        self.robots_waiting = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # figures for stats and /metrics (fronts/metrics.py); the fetch figures are the dispatcher's
        self.cache_lookups: Counter[str] = Counter()
        self.cached_answers = 0
        self.counted_hits = 0
        self.retries = 0  # after a 429/503 pause

    # -- intake ---------------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Requests held here (for robots.txt or for their host)."""
        return self.gate.waiting + self.robots_waiting

    def admit(self, job: Job) -> None:
        """Answer ``job`` from the cache, refuse it by robots.txt, or park it for its host."""
        if self.cache is not None and self.cache.enabled and self._cacheable(job) and self._from_cache(job):
            return
        if self.obey_robots or job.obey_robots:
            verdict = (self.robots or self._start_robots()).check(job.url)
            if verdict == DENY:
                self.fail(job, "robots_denied")
                return
            if verdict != ALLOW:
                self._robots_wait[origin_of(job.url) or ""].append(job)
                self.robots_waiting += 1
                return
        self._to_gate(job)

    def _start_robots(self) -> Robots:
        """The robots.txt cache, made when first needed: a daemon that never obeys it has no such pool."""
        cfg = self._robots_cfg
        self.robots = Robots(cfg.robots, cfg.fetch, cfg.security, self.loop.call_soon_threadsafe)
        self.robots.on_ready = self._robots_ready
        return self.robots

    def _cacheable(self, job: Job) -> bool:
        """Whether the cache can answer ``job`` (and may store its result): an entry holds a page's text
        in one mode, so a request that also wants metadata or links, or fetches under its own
        Accept-Language or size cap, goes to the origin and leaves the cache alone."""
        o = job.options
        if not o:
            return not self.default_metadata
        return not (o.get("metadata", self.default_metadata) or o.get("links") or UNCACHED_OPTIONS & o.keys())

    def _from_cache(self, job: Job) -> bool:
        job.cache_key = cache_key(job.url, (job.options or {}).get("mode", self.default_mode))
        entry = self.cache.lookup(job.cache_key)
        if entry is None:
            self.cache_lookups["miss"] += 1
            return False
        if entry.fresh:
            self.cache_lookups["hit"] += 1
            self._answer_cached(job, entry)
            return True
        if entry.etag or entry.last_modified:
            self.cache_lookups["revalidate"] += 1
            job.stale = entry
        else:
            self.cache_lookups["miss"] += 1
        return False

    def _answer_cached(self, job: Job, entry: Entry) -> None:
        self.cached_answers += 1
        if self.count_hits:
            self.counted_hits += 1
        elapsed_ms = round((time.perf_counter() - job.t0) * 1000.0, 3)
        frame = master_frame(
            job.req_id, job.url, ok=True, status=entry.status, final_url=entry.final_url,
            content_type=entry.content_type, text=entry.text, elapsed_ms=elapsed_ms, cached=True,
            **entry.fields, **entry.headers,
        )  # fmt: skip
        answer(job.sink, frame)

    def _robots_ready(self, origin: str, rules: Rules) -> None:
        if rules.crawl_delay and (host := host_of(origin)):
            self.gate.set_crawl_delay(host, rules.crawl_delay)
        jobs = self._robots_wait.pop(origin, [])
        self.robots_waiting -= len(jobs)
        for job in jobs:
            if self.robots.check(job.url) == DENY:
                self.fail(job, "robots_denied")
            else:
                self._to_gate(job, pump=False)
        self.pump()

    def _to_gate(self, job: Job, pump: bool = True) -> None:
        job.host = host_of(job.url)
        self.gate.add(job, job.host, job.arrived + self.max_wait)
        if pump:
            self.pump()

    # -- dispatch -------------------------------------------------------------------------------------

    def pop_ready(self) -> Job | None:
        """The next job whose host may start a fetch now (its slot is taken), with its ring options set."""
        job = self.gate.pop_ready(time.monotonic())
        if job is None:
            return None
        job.holds_host = True
        if job.stale is not None:  # revalidate the stale cache entry (the worker answers 304 as such)
            opts = dict(job.options) if job.options else {}
            if job.stale.etag:
                opts[OPT_IF_NONE_MATCH] = job.stale.etag
            if job.stale.last_modified:
                opts[OPT_IF_MODIFIED_SINCE] = job.stale.last_modified
            job.ring_options = opts or None
        return job

    def schedule(self) -> None:
        """Arm one loop timer for when a waiting host becomes ready or a wait passes its deadline."""
        at = self.gate.next_wakeup()
        if at is None or (self._timer is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        for job in self.gate.expired(time.monotonic()):
            self.fail(
                job, "timeout", f"waited longer than [politeness] max_wait={self.max_wait}s for its host"
            )
        self.pump()

    # -- results --------------------------------------------------------------------------------------

    def release(self, job: Job, frame: dict[str, Any] | None = None) -> None:
        """Give back the host slot a dispatched job held (its fetch ended with ``frame``, or it was dropped)."""
        if not job.holds_host:
            return
        job.holds_host = False
        if frame is None:
            self.gate.done(job.host, None, None, "", time.monotonic())
            return
        final = text(frame["final_url"])
        final_host = host_of(final) if final and final != job.url else ""
        self.gate.done(
            job.host,
            frame["status"],
            frame["retry_after"],
            final_host,
            time.monotonic(),
            frame["answered_at"],
            text(frame["error"]),
        )

    def finished(self, job: Job, frame: dict[str, Any]) -> bool:
        """A worker's result for ``job`` (its client frame, strings as UTF-8 bytes). True if handled here:
        retried after a 429/503 pause, or a 304 answered from the cache."""
        self.release(job, frame)
        status = frame["status"]
        if status in PAUSE_CODES and self._retry_later(job):
            return True
        if self.cache is None or not job.cache_key or not (frame["ok"] or status == 304):
            return False
        headers = {k: text(frame[k]) for k in CACHE_HEADERS}
        if status == 304:
            if job.stale is None:
                return False  # answered `not_modified`: we sent no validator
            self.cache.refresh(job.stale, headers)
            self._answer_cached(job, job.stale)
            return True
        fields = {k: frame[k] for k in CACHED_FIELDS}
        self.cache.store(
            job.cache_key, status, frame["final_url"], frame["content_type"], frame["text"], fields, headers
        )
        return False

    def _retry_later(self, job: Job) -> bool:
        """Requeue a job that got 429/503 at the front of its (now paused) host, within its retries."""
        if job.polite_retries >= self.max_retries or job.arrived + self.max_wait <= time.monotonic():
            return False
        job.polite_retries += 1
        self.retries += 1
        job.payload = b""  # a new ticket for the new attempt
        self.gate.add(job, job.host, job.arrived + self.max_wait, time.monotonic(), front=True)
        self.schedule()
        return True

    # -- shutdown -------------------------------------------------------------------------------------

    def drain(self) -> list[Job]:
        """Every job still held here, taken out (the caller answers them)."""
        jobs = self.gate.drain()
        for waiting in self._robots_wait.values():
            jobs.extend(waiting)
        self._robots_wait.clear()
        self.robots_waiting = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return jobs

    def close(self) -> None:
        if self.robots is not None:
            self.robots.close()
        if self.cache is not None:
            self.cache.close()

    def stats(self) -> dict[str, Any]:
        return {
            "politeness": self.gate.stats(),
            "robots": self.robots.stats() if self.robots is not None else None,
            "cache": {
                **(self.cache.stats() if self.cache is not None else {"enabled": False}),
                "lookups": dict(self.cache_lookups),
                "answers": self.cached_answers,
                "counted_as_downloads": self.counted_hits,
            },
            "retries": self.retries,
        }
