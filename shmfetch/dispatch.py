"""Jobs, round-robin dispatch with credit, and the collector threads that bring results back.

Everything here runs on the master's event loop thread, except ``_collect``, which runs in one thread per
result ring and only hands batches to the loop (docs/RING.md, "Wake-up path in the master").

A job is one client request. It is dispatched to the next live worker in strict round-robin order. Each
worker has credit: the ring slots of its unanswered requests may not exceed the ring or
``max_inflight_per_worker``. Without credit the job waits in ``pending`` (bounded by ``max_pending``), so
a put into a request ring never blocks the loop and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgpack

from .protocol import FRAME_HDR, error_frame, pack_request, result_frame
from .ring import Ring, RingClosed

if TYPE_CHECKING:
    from .cache import Entry
    from .frontier import Frontier

log = logging.getLogger("shmfetch.master")

COLLECT_BATCH = 64


def _unpack_raw(buf: Any) -> Any:
    # Strings stay UTF-8 bytes: the master only forwards a result's text, and decoding it into a str only
    # to encode it again for the client was most of the master's CPU per page (about 250 us for an
    # average 40 KB page on the 2-core test box, 800 us for 150 KB of non-ASCII text; docs/BENCHMARKS.md).
    # Malformed msgpack still raises here, in the collector, which kills the worker as before.
    return msgpack.unpackb(buf, raw=True)


# Packs result frames for clients. use_bin_type=False gives the UTF-8 bytes from _unpack_raw the msgpack
# str type, so a client receives exactly the bytes that packing the decoded strings produced. Used on the
# event loop thread only (a Packer is not thread-safe).
_result_packer = msgpack.Packer(use_bin_type=False)


def _text(v: Any) -> Any:
    """``v`` with the UTF-8 bytes that ``_unpack_raw`` left, at any depth, decoded to str."""
    if type(v) is bytes:
        return v.decode("utf-8", "replace")
    if type(v) is list:
        return [_text(x) for x in v]
    if type(v) is dict:
        return {_text(k): _text(x) for k, x in v.items()}
    return v


def _decoded(frame: dict[str, Any]) -> dict[str, Any]:
    """The frame with str values, for sinks that take a dict (the HTTP API)."""
    return {k: _text(v) for k, v in frame.items()}


class Sink(Protocol):
    """Where a job's answer goes: a client connection (listener.ClientConnection).

    A sink may also have ``send_encoded(bytes)``, taking a complete msgpack frame; results then reach it
    without their strings being decoded in the master (see ``_unpack_raw``). Others get ``send(dict)``.
    """

    closed: bool

    def send(self, frame: dict[str, Any]) -> None: ...


class Job:
    __slots__ = (
        "sink", "req_id", "url", "attempts", "t0", "ticket", "slots", "payload",
        # the admission path (frontier.py): per-request options, host gate, cache, timing
        "options", "ring_options", "arrived", "host", "holds_host", "polite_retries", "cache_key", "stale",
        "sent",
    )  # fmt: skip

    def __init__(self, sink: Sink, req_id: Any, url: str, options: dict[str, Any] | None = None):
        self.sink = sink
        self.req_id = req_id
        self.url = url
        self.attempts = 0
        self.t0 = time.perf_counter()
        self.ticket = 0
        self.slots = 0
        self.payload = b""
        self.options = options  # the client's per-request options (mode, ...)
        self.ring_options: dict[str, Any] | None = options  # what goes to the worker with the URL
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
        self.collector: threading.Thread | None = None
        self.drained = asyncio.Event()


class Dispatcher:
    def __init__(self, loop: asyncio.AbstractEventLoop, max_pending: int, max_inflight: int):
        self.loop = loop
        self.max_pending = max_pending
        self.max_inflight = max_inflight
        self.workers: list[WorkerHandle | None] = []
        self.pending: deque[Job] = deque()
        self.rr = 0
        self.accepting = True
        self._tickets = itertools.count(1)
        self.on_idle: Callable[[], None] | None = None  # everything answered (ends a drain early)
        self.on_busy: Callable[[], None] | None = None  # a worker got work (arms the hang watchdog)
        self.on_corrupt: Callable[[WorkerHandle], None] | None = None  # its result ring is unreadable
        self.frontier: Frontier | None = None  # cache, robots.txt, per-host gate (set by the master)
        # figures for `stats`
        self.ok_total = 0
        self.failures: Counter[str] = Counter()
        self.completions: deque[tuple[float, int]] = deque()  # (monotonic second, pages) for the rates
        self.redispatched = 0

    # -- intake ---------------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job, or answer it at once (``shutting_down``, ``overloaded``; counted like any failure)."""
        if not self.accepting:
            self.fail(job, "shutting_down")
        elif self.queued() >= self.max_pending:
            self.fail(job, "overloaded")
        elif self.frontier is not None:
            self.frontier.admit(job)
        else:
            self.pending.append(job)
            self.pump()

    def queued(self) -> int:
        """Requests waiting in the master: for robots.txt, for their host, or for a worker's credit."""
        return len(self.pending) + (self.frontier.waiting if self.frontier is not None else 0)

    def dispatched(self) -> int:
        return sum(len(w.outstanding) for w in self.workers if w is not None)

    def inflight(self) -> int:
        return self.queued() + self.dispatched()

    # -- dispatch -------------------------------------------------------------------------------------

    def pump(self) -> None:
        """Hand pending jobs to workers in strict round-robin order while the next worker has credit."""
        pending = self.pending
        workers = self.workers
        n = len(workers)
        frontier = self.frontier
        while pending or (frontier is not None and self._take_ready(frontier)):
            job = pending[0]
            if job.sink.closed:  # its client went away; do not spend a fetch on it
                pending.popleft()
                if frontier is not None:
                    frontier.release(job)
                continue
            w = None
            for step in range(n):
                cand = workers[(self.rr + step) % n]
                if cand is not None and cand.alive:
                    w = cand
                    self.rr = (self.rr + step) % n
                    break
            if w is None:
                break  # no live worker; respawn will pump again
            if not job.payload:
                job.ticket = next(self._tickets)
                job.payload = pack_request(job.ticket, job.url, job.ring_options)
                job.slots = w.req.slots_for(len(job.payload))
            if len(w.outstanding) >= self.max_inflight or w.credit_used + job.slots > w.req.nslots:
                break  # strict round robin: wait for this worker's credit
            pending.popleft()
            job.sent = time.perf_counter()
            if not w.outstanding:
                w.last_progress = time.monotonic()
                if self.on_busy is not None:
                    self.on_busy()
            w.outstanding[job.ticket] = job
            w.credit_used += job.slots
            w.req.put(job.payload)  # never blocks: credit guarantees the slots are free
            self.rr = (self.rr + 1) % n
        if frontier is not None:
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

    # -- results --------------------------------------------------------------------------------------

    def start_collector(self, w: WorkerHandle) -> None:
        w.collector = threading.Thread(
            target=self._collect, args=(w,), name=f"collect-{w.index}", daemon=True
        )
        w.collector.start()

    def _collect(self, w: WorkerHandle) -> None:
        res = w.res
        call = self.loop.call_soon_threadsafe
        try:
            while True:
                try:
                    batch = res.get_many(_unpack_raw, COLLECT_BATCH)
                except RingClosed:
                    break
                call(self._on_batch, w, batch)
        except Exception:
            # A record we cannot read means the ring is not what the layout says: trust nothing more
            # from this generation. The worker is killed and respawned on fresh rings; its unanswered
            # jobs are re-dispatched like after any crash.
            log.exception("worker %d: unreadable result ring %s; killing the worker", w.index, res.name)
            if self.on_corrupt is not None:
                call(self.on_corrupt, w)
        call(w.drained.set)

    def _on_batch(self, w: WorkerHandle, batch: list[list[Any]]) -> None:
        now = time.monotonic()
        w.last_progress = now
        done = 0
        debug = log.isEnabledFor(logging.DEBUG)  # per-request lines cost one check per batch when off
        pack = _result_packer.pack
        hdr = FRAME_HDR.pack
        frontier = self.frontier
        for record in batch:
            ticket = record[0]
            job = w.outstanding.pop(ticket, None)
            w.served += 1
            if job is None:
                continue
            w.credit_used -= job.slots
            frame = result_frame(
                job.req_id, job.url, w.index, round((time.perf_counter() - job.t0) * 1000.0, 3), record
            )
            if frontier is not None and frontier.finished(job, frame):
                continue  # retried after a 429/503 pause, or a 304 answered from the cache
            ok = frame["ok"]
            if ok:
                w.ok_received += 1
                self.ok_total += 1
                done += 1
            else:
                error = frame["error"] = _text(frame["error"])
                self.failures[error or "unknown"] += 1
            self.deliver(job, frame, pack, hdr)
            if debug:
                log.debug(
                    "%s: worker %d %s in %.1f ms",
                    job.url,
                    w.index,
                    "ok" if ok else error,
                    (time.perf_counter() - job.t0) * 1000.0,
                )
        self._note_completions(now, done)
        self.pump()
        if self.on_idle is not None and not self.inflight():
            self.on_idle()

    @staticmethod
    def deliver(
        job: Job, frame: dict[str, Any], pack: Any = _result_packer.pack, hdr: Any = FRAME_HDR.pack
    ) -> None:
        """Send a result frame (strings may be UTF-8 bytes, see ``_unpack_raw``) to the job's sink."""
        sink = job.sink
        send_encoded = getattr(sink, "send_encoded", None)
        if send_encoded is not None:
            if not sink.closed:  # a client that went away costs no pack
                body = pack(frame)
                send_encoded(hdr(len(body)) + body)
        else:
            sink.send(_decoded(frame))

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
        if self.frontier is not None:
            self.frontier.release(job)  # a job answered while it held its host's slot gives it back
        self.failures[code] += 1
        job.sink.send(error_frame(job.req_id, code, message, url=job.url))

    def orphans(self, w: WorkerHandle) -> list[Job]:
        """Take back the unanswered jobs of a dead, drained worker."""
        jobs = sorted(w.outstanding.values(), key=lambda j: j.ticket)
        w.outstanding.clear()
        w.credit_used = 0
        return jobs

    def redispatch(self, jobs: list[Job]) -> None:
        """Give each job of a crashed worker one more try at the front of the queue; a second crash fails it."""
        retry = []
        for job in jobs:
            job.attempts += 1
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
        if self.frontier is not None:
            for job in self.frontier.drain():
                self.fail(job, code)
                n += 1
        while self.pending:
            self.fail(self.pending.popleft(), code)
            n += 1
        for w in self.workers:
            if w is not None:
                for job in self.orphans(w):
                    self.fail(job, code)
                    n += 1
        return n
