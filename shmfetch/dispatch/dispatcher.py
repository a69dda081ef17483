"""The queue, and round-robin dispatch to workers with a free fetch thread; the accounting of results.

Runs on the master's event loop thread. The collectors (collector.py, one thread per result ring) hand
batches of result records to ``on_batch``; the answers go out through ``job.answer``.

A job (shmfetch/job.py) enters through ``submit`` (called by the one intake path, shmfetch/intake.py),
passes the frontier (cache, robots.txt, per-host politeness: frontier/admission.py, which the dispatcher
builds and which calls back ``fail`` and ``pump``), and then waits in ``pending`` (bounded by
``max_pending``) until a live worker has a free fetch thread for it: fewer unanswered requests than its
``threads``. A request put into a worker whose threads are all busy would wait in its ring behind them,
however slow they are, while another worker sits idle; so it waits here instead, and goes to whichever
worker frees a thread first. Among the workers with a free thread the order is round robin: a busy worker
is skipped and gets its turn back in the next round, and while every worker has a free thread the split is
exactly even. Credit stays the ring's safety bound: the ring slots of a worker's unanswered requests may not
exceed its request ring or ``max_inflight_per_worker``, so a put into a request ring never blocks the loop
and nothing is dropped.

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
from typing import Any

from ..frontier.admission import Fail, Frontier, Pump
from ..job import Job, answer, text
from ..protocol import error_frame, pack_request, result_frame
from .collector import start_collector
from .figures import FetchFigures
from .handle import WorkerHandle

log = logging.getLogger("shmfetch.master")


class Dispatcher:
    """Jobs from intake to the workers and results back; see the module docstring.

    The master uses ``attach`` (a spawned worker takes its slot), ``detach`` (a dead one leaves it, with
    its unanswered jobs), ``handles`` (a read-only view of the slots), ``redispatch``, ``fail`` and
    ``fail_all``; ``on_idle`` (everything answered), ``on_busy`` (a worker got work) and ``on_corrupt``
    (a worker's result ring is unreadable) call it back.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        slots: int,
        max_pending: int,
        max_inflight: int,
        threads: int,
        make_frontier: Callable[[Fail, Pump], Frontier],
        on_idle: Callable[[], None] | None = None,
        on_busy: Callable[[], None] | None = None,
        on_corrupt: Callable[[WorkerHandle], None] | None = None,
    ):
        self.loop = loop
        self.max_pending = max_pending
        self.max_inflight = max_inflight
        self.threads = threads  # fetch threads per worker: a worker with fewer open jobs has one free
        self.workers: list[WorkerHandle | None] = [None] * slots
        self.pending: deque[Job] = deque()
        self.rr = 0  # the worker whose turn is next
        self.accepting = True
        self._tickets = itertools.count(1)
        self.on_idle = on_idle
        self.on_busy = on_busy
        self.on_corrupt = on_corrupt
        # Cache, robots.txt, per-host gate: every job passes it. It answers through our fail and asks for
        # a pump when jobs become ready; it knows nothing else of us.
        self.frontier = make_frontier(self.fail, self.pump)
        # figures for `stats`
        self.ok_total = 0
        self.failures: Counter[str] = Counter()
        self.completions: deque[tuple[float, int]] = deque()  # (monotonic second, pages) for the rates
        self.started = time.monotonic()  # the rates' windows are no longer than the time since
        self.redispatched = 0
        self.fetches = FetchFigures()

    # -- workers --------------------------------------------------------------------------------------

    def attach(self, w: WorkerHandle) -> None:
        """A (re)spawned worker takes its slot; queued jobs may go to it at once."""
        self.workers[w.index] = w
        self.pump()

    def detach(self, w: WorkerHandle) -> list[Job]:
        """A dead, drained worker leaves its slot (if it still holds it); returns its unanswered jobs."""
        orphans = self.orphans(w)
        if self.workers[w.index] is w:
            self.workers[w.index] = None
        return orphans

    def handles(self) -> list[WorkerHandle | None]:
        """The worker slots, in index order (None: no live generation); a copy, so the master can read it
        but changes the slots only through ``attach`` and ``detach``."""
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
        """Requests waiting in the master: for robots.txt, for their host, or for a free fetch thread."""
        return len(self.pending) + self.frontier.waiting

    def dispatched(self) -> int:
        return sum(len(w.outstanding) for w in self.workers if w is not None)

    def inflight(self) -> int:
        return self.queued() + self.dispatched()

    @property
    def per_worker(self) -> int:
        """Open jobs a worker is given at most: one per fetch thread, within its credit."""
        return min(self.threads, self.max_inflight)

    def free_capacity(self) -> int:
        """Jobs the workers can start now (their free fetch threads), less what already waits in the
        master (bounded by ``max_pending``, as ``submit`` bounds the queue)."""
        per = self.per_worker
        free = sum(max(0, per - len(w.outstanding)) for w in self.workers if w is not None and w.alive)
        return min(free, self.max_pending) - self.queued()

    # -- dispatch -------------------------------------------------------------------------------------

    def pump(self) -> None:
        """Hand queued jobs, in order, to the workers with a free fetch thread, round robin; stop when
        none has one."""
        pending = self.pending
        frontier = self.frontier
        while pending or self._take_ready(frontier):
            job = pending[0]
            if job.sink.closed:  # its client went away; do not spend a fetch on it
                pending.popleft()
                frontier.release(job)
                continue
            w = self._next_free(job)
            if w is None:
                break  # every live worker is busy (a result will pump again) or none is alive (respawn will)
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

    def _next_free(self, job: Job) -> WorkerHandle | None:
        """The first live worker with a free fetch thread and credit for ``job``, from the one whose turn
        it is; the turn then passes to the worker after it. A busy worker is skipped, not waited for."""
        workers = self.workers
        n = len(workers)
        threads = self.threads
        for step in range(n):
            i = (self.rr + step) % n
            w = workers[i]
            if w is None or not w.alive or len(w.outstanding) >= threads:
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
        for record in batch:
            job = w.outstanding.pop(record[0], None)
            w.served += 1
            if job is None:
                continue
            w.credit_used -= job.slots
            frame = self._deliver(w, job, record)
            if frame is None:
                continue
            done += frame["ok"]
            if debug:
                outcome = "ok" if frame["ok"] else frame["error"]
                log.debug("%s: worker %d %s in %.1f ms", job.url, w.index, outcome, frame["elapsed_ms"])
        self._note_completions(now, done)
        self.pump()
        if self.on_idle is not None and not self.inflight():
            self.on_idle()

    def _deliver(self, w: WorkerHandle, job: Job, record: list[Any]) -> dict[str, Any] | None:
        """Count ``job``'s result and answer it; None if the frontier kept it (a retry after a 429/503
        pause, or a 304 it answered from the cache)."""
        elapsed_ms = round((time.perf_counter() - job.t0) * 1000.0, 3)
        frame = result_frame(job.req_id, job.url, w.index, elapsed_ms, record)
        self.fetches.observe(time.perf_counter() - job.sent if job.sent else None, frame)
        if self.frontier.finished(job, frame):
            return None
        if frame["ok"]:
            w.ok_received += 1
            self.ok_total += 1
        else:
            frame["error"] = text(frame["error"])
            self.failures[frame["error"] or "unknown"] += 1
        answer(job.sink, frame)
        return frame

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
        """Pages per second over the last ``seconds``, or over the time since start when that is shorter
        (250 pages in a daemon's first 34 s are 7.4/s, not 250/60)."""
        now = time.monotonic()
        window = min(seconds, max(1.0, now - self.started))
        return sum(n for s, n in self.completions if s > int(now) - seconds) / window

    def retries(self) -> int:
        """Retries of every kind: in the workers, after a 429/503 pause, after a crash."""
        return self.fetches.retries + self.frontier.retries + self.redispatched

    def frontier_stats(self) -> dict[str, Any]:
        """The frontier's figures with the fetch figures beside them (``stats()["frontier"]``)."""
        return {
            **self.frontier.stats(),
            "retries": self.fetches.retries + self.frontier.retries,
            **self.fetches.snapshot(),
        }

    # -- failure paths --------------------------------------------------------------------------------

    def fail(self, job: Job, code: str, message: str | None = None) -> None:
        """Answer ``job`` with error ``code`` (counted), giving back the host slot it may hold."""
        self.frontier.release(job)
        self.failures[code] += 1
        answer(job.sink, error_frame(job.req_id, code, message, url=job.url))

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
