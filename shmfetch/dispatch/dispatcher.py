"""Jobs, the queue, and round-robin dispatch with credit; the accounting of results as they come back.

Runs on the master's event loop thread. The collectors (collector.py, one thread per result ring) hand
batches of result records to ``on_batch``; the answers go out as client frames (replies.py).

A job is one client request. It waits in ``pending`` (bounded by ``max_pending``) until a live worker has
credit for it: a worker's credit is spent by the ring slots of its unanswered requests, which may not
exceed its request ring or ``max_inflight_per_worker``. So a put into a request ring never blocks the loop
and nothing is dropped. Among the workers with credit the order is round robin: a full worker is skipped
and gets its turn back in the next round, so one slow worker never holds up the queue, and while every
worker has credit the split is exactly even.

Each dispatch records the request's end position in the worker's request ring (``Ring.put``). When a
worker dies, its consumer position (the published ``tail``) says which of its requests it had taken: the
others are put back at the front of the queue as they are; only a taken one counts a crash against it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..ipc.ring import Ring
from ..protocol import error_frame, pack_request, result_frame
from ..replies import Sink, send_result, text
from .collector import start_collector

if TYPE_CHECKING:
    from ..frontier.admission import Frontier
    from ..frontier.cache import Entry

log = logging.getLogger("shmfetch.master")


class Job:
    __slots__ = (
        "sink", "req_id", "url", "attempts", "t0", "ticket", "slots", "payload", "end",
        # the admission path (frontier.py): per-request options, host gate, cache, timing
        "options", "ring_options", "arrived", "host", "holds_host", "polite_retries", "cache_key", "stale",
        "sent",
    )  # fmt: skip

    def __init__(self, sink: Sink, req_id: Any, url: str, options: dict[str, Any] | None = None):
        self.sink = sink
        self.req_id = req_id
        self.url = url
        self.attempts = 0  # crashes of a worker that had taken it
        self.t0 = time.perf_counter()
        self.ticket = 0
        self.slots = 0
        self.payload = b""
        self.end = 0  # end position of its record in the request ring it was put in
        self.options = options  # the client's per-request options, checked by options.check
        # what goes to the worker with the URL: those, plus the frontier's own (options.INTERNAL)
        self.ring_options: dict[str, Any] | None = options
        self.arrived = time.monotonic()
        self.host = ""
        self.holds_host = False  # counts against its host's per_host limit
        self.polite_retries = 0
        self.cache_key = ""
        self.stale: Entry | None = None  # a stale cache entry this fetch revalidates
        self.sent = 0.0  # perf_counter at dispatch to a worker


class WorkerHandle:
    """The master's view of one worker process and its two rings (one generation)."""

    def __init__(self, index: int, generation: int, req: Ring, res: Ring):
        self.index = index
        self.generation = generation
        self.req = req
        self.res = res
        self.pid = 0
        self.alive = False
        self.outstanding: dict[int, Job] = {}
        self.credit_used = 0
        self.ok_received = 0
        self.served = 0
        self.started = time.monotonic()
        self.last_progress = self.started
        self.collector = None
        self.drained = asyncio.Event()

    def has_credit(self, job: Job, max_inflight: int) -> bool:
        return len(self.outstanding) < max_inflight and self.credit_used + job.slots <= self.req.nslots


class Dispatcher:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_pending: int,
        max_inflight: int,
        workers: int = 0,
        on_idle: Callable[[], None] | None = None,
        on_busy: Callable[[], None] | None = None,
        on_corrupt: Callable[[WorkerHandle], None] | None = None,
    ):
        self.loop = loop
        self.max_pending = max_pending
        self.max_inflight = max_inflight
        self.workers: list[WorkerHandle | None] = [None] * workers  # by slot; see attach/detach
        self.pending: deque[Job] = deque()
        self.rr = 0  # the worker whose turn is next
        self.accepting = True
        self._tickets = itertools.count(1)
        self.on_idle = on_idle  # everything answered (ends a drain early)
        self.on_busy = on_busy  # a worker got work (arms the hang watchdog)
        self.on_corrupt = on_corrupt  # its result ring is unreadable
        # Cache, robots.txt, per-host gate: every job passes it. Set by the master right after this
        # constructor, because the frontier is built on this dispatcher.
        self.frontier: Frontier
        # figures for `stats`
        self.ok_total = 0
        self.failures: Counter[str] = Counter()
        self.completions: deque[tuple[float, int]] = deque()  # (monotonic second, pages) for the rates
        self.redispatched = 0

    # -- worker slots (the supervisor's side) -----------------------------------------------------------

    def attach(self, w: WorkerHandle) -> None:
        """A (re)spawned worker takes its slot; queued jobs go to it at once."""
        self.workers[w.index] = w
        self.pump()

    def detach(self, w: WorkerHandle) -> list[Job]:
        """A dead, drained worker: free its slot if it still holds it; returns its unanswered jobs."""
        orphans = self.orphans(w)
        if self.workers[w.index] is w:
            self.workers[w.index] = None
        return orphans

    def handles(self) -> list[WorkerHandle | None]:
        """The worker in each slot, None where none is (a copy: read it, do not write it)."""
        return list(self.workers)

    def stop_accepting(self) -> None:
        """From now on every new job is answered ``shutting_down``."""
        self.accepting = False

    # -- intake ---------------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job, or answer it at once (``shutting_down``, ``overloaded``; counted like any failure)."""
        if not self.accepting:
            self.fail(job, "shutting_down")
        elif self.queued() >= self.max_pending:
            self.fail(job, "overloaded")
        else:
            self.frontier.admit(job)

    def queued(self) -> int:
        """Requests waiting in the master: for robots.txt, for their host, or for a worker's credit."""
        return len(self.pending) + self.frontier.waiting

    def dispatched(self) -> int:
        return sum(len(w.outstanding) for w in self.workers if w is not None)

    def inflight(self) -> int:
        return self.queued() + self.dispatched()

    # -- dispatch -------------------------------------------------------------------------------------

    def pump(self) -> None:
        """Hand queued jobs, in order, to the workers with credit, round robin; stop when none has any."""
        pending = self.pending
        frontier = self.frontier
        while pending or self._take_ready(frontier):
            job = pending[0]
            if job.sink.closed:  # its client went away; do not spend a fetch on it
                pending.popleft()
                frontier.release(job)
                continue
            w = self._next_with_credit(job)
            if w is None:
                break  # every live worker is full (a result will pump again) or none is alive (respawn will)
            pending.popleft()
            self._send(w, job)
        frontier.schedule()

    def _take_ready(self, frontier: Frontier) -> bool:
        """Move the next job whose host may start now from the frontier to ``pending``; False if none.

        Only when ``pending`` is empty: a job leaves the frontier when a worker can take it, so its host's
        delay is measured at dispatch, not while it sits behind other jobs here.
        """
        job = frontier.pop_ready()
        if job is None:
            return False
        self.pending.append(job)
        return True

    def _next_with_credit(self, job: Job) -> WorkerHandle | None:
        """The first live worker with credit for ``job``, from the one whose turn it is; the turn then
        passes to the worker after it. A full worker is skipped, not waited for."""
        workers = self.workers
        n = len(workers)
        for step in range(n):
            i = (self.rr + step) % n
            w = workers[i]
            if w is None or not w.alive:
                continue
            if not job.payload:
                job.ticket = next(self._tickets)
                job.payload = pack_request(job.ticket, job.url, job.ring_options)
                job.slots = w.req.slots_for(len(job.payload))  # every request ring has the same geometry
            if w.has_credit(job, self.max_inflight):
                self.rr = (i + 1) % n
                return w
        return None

    def _send(self, w: WorkerHandle, job: Job) -> None:
        if not w.outstanding:
            w.last_progress = time.monotonic()
            if self.on_busy is not None:
                self.on_busy()
        w.outstanding[job.ticket] = job
        w.credit_used += job.slots
        job.sent = time.perf_counter()
        job.end = w.req.put(job.payload)  # never blocks: credit guarantees the slots are free

    # -- results --------------------------------------------------------------------------------------

    def start_collector(self, w: WorkerHandle) -> None:
        start_collector(w, self.loop, self.on_batch, self.on_corrupt)

    def on_batch(self, w: WorkerHandle, batch: list[list[Any]]) -> None:
        """A collector's batch of result records from ``w``: answer each job, return the credit, pump."""
        now = time.monotonic()
        w.last_progress = now
        done = 0
        debug = log.isEnabledFor(logging.DEBUG)  # per-request lines cost one check per batch when off
        frontier = self.frontier
        for record in batch:
            job = w.outstanding.pop(record[0], None)
            w.served += 1
            if job is None:
                continue
            w.credit_used -= job.slots
            elapsed_ms = round((time.perf_counter() - job.t0) * 1000.0, 3)
            frame = result_frame(job.req_id, job.url, w.index, elapsed_ms, record)
            if frontier.finished(job, frame):
                continue  # retried after a 429/503 pause, or a 304 answered from the cache
            if frame["ok"]:
                w.ok_received += 1
                self.ok_total += 1
                done += 1
            else:
                frame["error"] = text(frame["error"])
                self.failures[frame["error"] or "unknown"] += 1
            send_result(job.sink, frame)
            if debug:
                outcome = "ok" if frame["ok"] else frame["error"]
                log.debug("%s: worker %d %s in %.1f ms", job.url, w.index, outcome, elapsed_ms)
        self._note_completions(now, done)
        self.pump()
        if self.on_idle is not None and not self.inflight():
            self.on_idle()

    def _note_completions(self, now: float, n: int) -> None:
        sec = int(now)
        c = self.completions
        if c and c[-1][0] == sec:
            c[-1] = (sec, c[-1][1] + n)
        else:
            c.append((sec, n))
        while c and c[0][0] < sec - 60:
            c.popleft()

    def rate(self, seconds: int) -> float:
        now = int(time.monotonic())
        return sum(n for s, n in self.completions if s > now - seconds) / seconds

    # -- failure paths --------------------------------------------------------------------------------

    def fail(self, job: Job, code: str, message: str | None = None) -> None:
        self.frontier.release(job)  # a job answered while it held its host's slot gives it back
        self.failures[code] += 1
        job.sink.send(error_frame(job.req_id, code, message, url=job.url))

    def orphans(self, w: WorkerHandle) -> list[Job]:
        """Take back the unanswered jobs of a dead, drained worker, in dispatch order. A job whose record
        ends past the worker's published consumer position was never taken: it keeps ``attempts``; one
        the worker had taken gets a strike (``attempts += 1``). Read before the rings are unlinked."""
        _, tail = w.req.positions()
        jobs = sorted(w.outstanding.values(), key=lambda j: j.ticket)
        for job in jobs:
            if job.end <= tail:
                job.attempts += 1
        w.outstanding.clear()
        w.credit_used = 0
        return jobs

    def redispatch(self, jobs: list[Job]) -> None:
        """Put a dead worker's jobs back at the front of the queue, in order; a job that was taken by a
        worker that crashed twice fails with ``worker_crashed``."""
        retry = []
        for job in jobs:
            if job.attempts >= 2:
                self.fail(job, "worker_crashed", "the worker fetching this URL died twice")
            else:
                job.payload = b""  # new ticket: the old one may still be in the dead ring's records
                self.redispatched += 1
                retry.append(job)
        self.pending.extendleft(reversed(retry))
        self.pump()

    def fail_all(self, code: str) -> int:
        """Answer every job still waiting or in flight with ``code``. Returns how many."""
        n = 0
        for job in self.frontier.drain():
            self.fail(job, code)
            n += 1
        while self.pending:
            self.fail(self.pending.popleft(), code)
            n += 1
        for w in self.workers:
            if w is not None:
                for job in w.outstanding.values():
                    self.fail(job, code)
                    n += 1
                w.outstanding.clear()
                w.credit_used = 0
        return n
