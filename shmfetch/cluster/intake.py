"""The master's Redis intake: jobs from a consumer group through the intake path, results back as one script.

It runs on the master's event loop with ``redis.asyncio``, in three tasks, none of which blocks the loop:

- ``_read_loop``: ``XREADGROUP GROUP g host:pid COUNT <free capacity> BLOCK`` → one ``Job`` per entry,
  taken by the one intake path (shmfetch/intake.py) like a local request. Free capacity is the workers'
  free fetch threads (``Dispatcher.free_capacity``) minus the jobs already queued in the master, so a
  daemon holds no more jobs than it can work on and the rest stays in the stream for the other daemons.
  When there is none it waits for a result to free some.
- ``_commit_loop``: results wait in ``backlog`` and are committed in pipelined batches of the ``COMMIT``
  script (streams.py): store the result, XACK, INCR the cluster total, all or nothing, and only while the
  entry is still pending under this consumer. A batch that meets a dead connection stays in the backlog
  and is retried after reconnecting; the entry stays pending meanwhile, so nothing acknowledged is lost
  and a retry never stores twice.
- ``_maintain_loop``, every ``claim_idle / 4``: ``REFRESH`` the entries held longer than ``claim_idle / 3``
  (a slow job is not stolen from a live daemon; one already stolen is dropped), ``XAUTOCLAIM`` entries idle
  longer than ``claim_idle`` (a dead daemon's jobs), and trim the jobs stream of the entries the group
  has acknowledged.
- ``_figures_loop``, every second: the group's figures for ``stats`` (lag, pending, consumers, cluster
  total), with the time they were read, so that ``stats`` shows their age when Redis does not answer.

A job answered ``shutting_down`` or ``overloaded`` is not acknowledged: it stays pending and another
daemon reclaims it. If Redis is down, local clients do not notice; the intake logs the state once,
retries with exponential backoff and shows ``state`` in ``stats``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..dispatch.dispatcher import Dispatcher
from ..intake import Intake, Refused
from ..job import answer
from ..protocol import error_frame
from . import streams

log = logging.getLogger("shmfetch.cluster")

BLOCK_MS = 2000
FORGET_AFTER = 5  # × claim_idle: a consumer idle this long with nothing pending has departed
COMMIT_BATCH = 256
# How long close() waits for a cancelled task to end, twice (a second cancel in between), before it goes on
# without it. redis-py can swallow a cancellation that lands while a command completes (seen: the
# maintenance loop carried on after its cancel, and close() waited for it forever).
TASK_STOP_GRACE = 1.0
FIGURES_PERIOD = 1.0  # s between reads of the group's figures: stats shows none older, or says how old
CLAIM_ROUNDS = 8  # XAUTOCLAIM pages per maintenance pass
CLAIM_COUNT = 100  # entries per XAUTOCLAIM page beyond free capacity
RELEASE_CODES = ("shutting_down", "overloaded")  # answers that leave the job to another daemon
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class StreamSink:
    """The sink of one job read from the stream (job.Sink): its answer goes to ``ClusterIntake``.

    ``closed`` turns true once the entry is known to belong to another consumer: the dispatcher then skips
    the job if it is still queued, and a result that arrives anyway is dropped.
    """

    __slots__ = ("intake", "entry", "job_id", "reply_to", "closed", "fresh")

    def __init__(self, intake: ClusterIntake, entry: str, job_id: str | None, reply_to: str | None):
        self.intake = intake
        self.entry = entry
        self.job_id = job_id
        self.reply_to = reply_to
        self.closed = False
        self.fresh = time.monotonic()  # when its idle time in Redis was last reset

    def send(self, frame: dict[str, Any]) -> None:
        self.intake.complete(self, frame)


class ClusterIntake:
    def __init__(self, cfg: Any, intake: Intake, dispatcher: Dispatcher, claim_idle: float):
        self.cfg = cfg  # config.ClusterConfig
        self.intake = intake
        self.dispatcher = dispatcher  # read for its free capacity
        self.claim_idle = claim_idle
        self.consumer = streams.consumer_name()
        # One immediate retry (a pooled connection may be stale after a Redis restart); past that the
        # loops below back off themselves, and report the outage at once instead of after redis-py's own
        # backoff schedule.
        self.redis = aioredis.Redis.from_url(
            cfg.redis,
            socket_timeout=BLOCK_MS / 1000 + 5,
            socket_connect_timeout=5,
            retry=Retry(NoBackoff(), 1),
        )
        # XAUTOCLAIM's reply differs between Redis 6.2 and 7; streams.autoclaim_reply reads both raw.
        self.redis.set_response_callback("XAUTOCLAIM", lambda reply, **_: reply)
        self._commit_sha = hashlib.sha1(streams.COMMIT.encode()).hexdigest()
        self._refresh = self.redis.register_script(streams.REFRESH)
        self._forget = self.redis.register_script(streams.FORGET)
        self.keys = (cfg.jobs, cfg.results, streams.total_key(cfg.jobs), streams.dead_key(cfg.jobs))
        self.held: dict[str, StreamSink] = {}  # entries pending under this consumer that we work on
        self.backlog: deque[tuple[StreamSink, dict[str, Any]]] = deque()
        self.accepting = True
        self.state = "connecting"
        self.failures = 0
        self._backoff = ExponentialBackoff(cap=5.0, base=0.1)
        self._capacity = asyncio.Event()
        self._results = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._cut_short = False  # close() stops waiting for the backlog's commits
        self._closing = False  # the loops' own stop condition: a swallowed cancel must not keep them going
        self.group_info: dict[str, Any] = {}
        self._figures_at: float | None = None  # monotonic time group_info was read
        self._last_delivered: bytes | None = None  # the group's, as of that read (for the trim)
        self.counts = dict.fromkeys(
            (
                "claimed",
                "reclaimed",
                "committed",
                "stale_dropped",
                "released",
                "dead_lettered",
                "malformed",
                "forgotten",
            ),
            0,
        )

    # -- life -------------------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for coro in (self._read_loop(), self._commit_loop(), self._maintain_loop(), self._figures_loop()):
            task = loop.create_task(coro)
            task.add_done_callback(_log_crash)
            self._tasks.append(task)
        log.info(
            "cluster: consumer %s in group %s on %s %s (claim_idle %.1fs)",
            self.consumer,
            self.cfg.group,
            streams.safe_url(self.cfg.redis),
            self.cfg.jobs,
            self.claim_idle,
        )

    def cut_short(self) -> None:
        """Make a ``close`` in progress stop waiting for the backlog's commits (the operator asked again)."""
        self._cut_short = True

    def stop_accepting(self) -> None:
        """Read no more jobs; the ones held finish, and their results are still committed."""
        self.accepting = False
        if self._tasks and not self._tasks[0].done():
            self._tasks[0].cancel()  # it may sit in XREADGROUP BLOCK

    async def close(self, timeout: float) -> None:
        """Commit what is in the backlog (for up to ``timeout`` s), then stop the tasks and disconnect."""
        self.stop_accepting()
        deadline = time.monotonic() + timeout
        while self.backlog and time.monotonic() < deadline and not self._cut_short:
            await asyncio.sleep(0.02)
        if self.backlog:
            log.warning(
                "cluster: %d result(s) not committed (Redis %s); their jobs stay pending for another daemon",
                len(self.backlog),
                self.state,
            )
        self._closing = True
        await self._stop_tasks()
        try:
            await asyncio.wait_for(self.redis.aclose(), TASK_STOP_GRACE)
        except TimeoutError:
            log.warning("cluster: the Redis connections did not close within %.1fs; leaving them", TASK_STOP_GRACE)

    async def _stop_tasks(self) -> None:
        """Cancel the loops and wait for them, boundedly: a loop whose cancel was swallowed stops at its
        next turn (``_closing``) or at a second cancel; one that still runs is left behind, said in the log."""
        pending = {t for t in self._tasks if not t.done()}
        for _ in range(2):
            for t in pending:
                t.cancel()
            if not pending:
                break
            _, pending = await asyncio.wait(pending, timeout=TASK_STOP_GRACE)
        for t in pending:
            log.warning("cluster: task %s did not stop; leaving it", t.get_coro().__qualname__)

    # -- connection state -------------------------------------------------------------------------------

    def _up(self) -> None:
        if self.state != "up":
            log.info("cluster: Redis %s is up", streams.safe_url(self.cfg.redis))
        self.state = "up"
        self.failures = 0

    async def _down(self, err: BaseException) -> None:
        if self.state != "down":
            log.warning("cluster: Redis %s is down (%s); retrying", streams.safe_url(self.cfg.redis), err)
        self.state = "down"
        self.failures += 1
        await asyncio.sleep(self._backoff.compute(self.failures))

    async def _ensure_group(self) -> None:
        """Create the group at the start of the stream (jobs enqueued before any daemon ran count too)."""
        try:
            await self.redis.xgroup_create(self.cfg.jobs, self.cfg.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    # -- intake -----------------------------------------------------------------------------------------

    def _read_min(self) -> int:
        """Read when at least a quarter of a worker's capacity is free (up to 16 jobs), not for every single
        result: fewer, fuller XREADGROUP round trips, while three quarters of the threads still work."""
        d = self.dispatcher
        return max(1, min(16, d.per_worker // 4, d.max_pending // 4))

    async def _read_loop(self) -> None:
        group_ready = False
        while self.accepting:
            free = self.dispatcher.free_capacity()
            if free < self._read_min():
                self._capacity.clear()
                # Results of our own jobs set the event; local clients' results free threads too, unseen.
                try:
                    await asyncio.wait_for(self._capacity.wait(), 0.5)
                except TimeoutError:
                    pass
                continue
            try:
                if not group_ready:
                    await self._ensure_group()
                    group_ready = True
                reply = await self.redis.xreadgroup(
                    self.cfg.group, self.consumer, {self.cfg.jobs: ">"}, count=free, block=BLOCK_MS
                )
            except ResponseError as e:  # Redis answers, but not as expected: say so, and back off
                if "NOGROUP" in str(e):  # Redis lost the group (restarted without persistence)
                    group_ready = False
                log.warning("cluster: reading %s: %s", self.cfg.jobs, e)
                await asyncio.sleep(self._backoff.compute(1))
                continue
            except _DOWN as e:
                await self._down(e)
                continue
            self._up()
            for _stream, entries in reply or []:
                for eid, fields in entries:
                    self.counts["claimed"] += 1
                    self._take(eid.decode(), fields)

    def _take(self, entry: str, fields: dict[bytes, bytes] | None) -> None:
        if entry in self.held:  # ours already (XAUTOCLAIM hands back our own idle entries too)
            return
        try:
            url, job_id, reply_to, raw_options = streams.parse_job(fields)
        except streams.MalformedJob as e:
            self._malformed(entry, streams.reply_key(fields), e)
            return
        sink = self._hold(entry, job_id, reply_to)
        try:
            self.intake.take(sink, job_id, url, raw_options)
        except Refused as e:
            if e.code != "invalid_url":  # the options: the entry is malformed, as a field it cannot have
                self.held.pop(entry, None)
                self._malformed(entry, reply_to, e)
                return
            answer(sink, error_frame(None, "invalid_url", str(e), url=url))

    def _malformed(self, entry: str, reply_to: str | None, e: Exception) -> None:
        self.counts["malformed"] += 1
        log.warning("cluster: malformed job %s: %s", entry, e)
        sink = self._hold(entry, None, reply_to)
        answer(sink, error_frame(None, "bad_request", f"malformed job entry: {e}", url=""))

    def _hold(self, entry: str, job_id: str | None, reply_to: str | None) -> StreamSink:
        sink = StreamSink(self, entry, job_id, reply_to)
        self.held[entry] = sink
        return sink

    # -- results ----------------------------------------------------------------------------------------

    def complete(self, sink: StreamSink, frame: dict[str, Any]) -> None:
        """A job's answer (from the dispatcher): queue its commit, or leave the job to another daemon."""
        if sink.closed:
            self.counts["stale_dropped"] += 1
            return
        if not frame.get("ok") and frame.get("error") in RELEASE_CODES:
            self.held.pop(sink.entry, None)
            self.counts["released"] += 1
            self._capacity.set()
            return
        self.backlog.append((sink, frame))
        self._results.set()

    async def _commit_loop(self) -> None:
        while not self._closing:
            await self._results.wait()
            self._results.clear()
            while self.backlog:
                batch = [self.backlog.popleft() for _ in range(min(COMMIT_BATCH, len(self.backlog)))]
                try:
                    replies = await self._commit_batch(batch)
                except _DOWN as e:
                    self.backlog.extendleft(reversed(batch))
                    await self._down(e)
                    continue
                self._up()
                for (sink, frame), reply in zip(batch, replies, strict=True):
                    self._committed(sink, frame, reply)
                self._capacity.set()

    async def _commit_batch(self, batch: list[tuple[StreamSink, dict[str, Any]]]) -> list[Any]:
        """One pipelined round trip of ``COMMIT`` calls by sha. (redis-py's Script objects would ask
        ``SCRIPT EXISTS`` first, a second round trip per batch.) Calls that meet an empty script cache (a
        restarted Redis) load the script and go again; the script is idempotent, so that is safe."""
        replies = await self._commit_calls(batch)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            self._commit_sha = await self.redis.script_load(streams.COMMIT)
            again = await self._commit_calls([batch[i] for i in missing])
            for i, r in zip(missing, again, strict=True):
                replies[i] = r
        return replies

    async def _commit_calls(self, batch: list[tuple[StreamSink, dict[str, Any]]]) -> list[Any]:
        jobs, results, total, dead_key = self.keys
        pipe = self.redis.pipeline(transaction=False)
        reply_ttl_ms = str(max(1, int(self.cfg.reply_ttl * 1000)))
        for sink, frame in batch:
            fields = streams.result_fields(sink.entry, sink.job_id, self.consumer, frame)
            ok, dead = "1" if frame.get("ok") else "0", "1" if frame.get("dead_letter") else "0"
            keys = (jobs, sink.reply_to or results, total, dead_key)
            ttl = reply_ttl_ms if sink.reply_to else "0"  # a client's reply stream always expires
            pipe.evalsha(self._commit_sha, 4, *keys, self.cfg.group, self.consumer, sink.entry,
                         self.cfg.results_maxlen, ok, dead, ttl, *fields)  # fmt: skip
        return await pipe.execute(raise_on_error=False)

    def _committed(self, sink: StreamSink, frame: dict[str, Any], reply: Any) -> None:
        if isinstance(reply, ResponseError):
            if sink.reply_to:  # e.g. reply_to names a key that is not a stream: use the default stream
                log.warning("cluster: cannot store result of %s in %s: %s", sink.entry, sink.reply_to, reply)
                sink.reply_to = None
                self.backlog.append((sink, frame))
                self._results.set()
                return
            log.error("cluster: cannot store result of %s: %s", sink.entry, reply)
        elif reply == 1:
            self.counts["committed"] += 1
            self.counts["dead_lettered"] += bool(frame.get("dead_letter"))
        else:  # another consumer owns the entry by now (it reclaimed it while we were slow)
            self.counts["stale_dropped"] += 1
        self.held.pop(sink.entry, None)

    # -- maintenance ------------------------------------------------------------------------------------

    async def _maintain_loop(self) -> None:
        period = min(5.0, max(0.05, self.claim_idle / 4))
        while not self._closing:
            await asyncio.sleep(period)
            try:
                await self._refresh_held()
                if self.accepting:
                    await self._reclaim()
                if self._last_delivered is not None:
                    await self._trim_jobs(self._last_delivered)
                await self._forget_departed()
            except ResponseError as e:
                log.warning("cluster: maintenance: %s", e)
            except _DOWN:
                pass  # the read and commit loops report the state and back off

    async def _refresh_held(self) -> None:
        now = time.monotonic()
        stale = [s for s in self.held.values() if now - s.fresh > self.claim_idle / 3 and not s.closed]
        if not stale:
            return
        lost = await self._refresh(
            keys=[self.cfg.jobs], args=[self.cfg.group, self.consumer, *[s.entry for s in stale]]
        )
        for s in stale:
            s.fresh = now
        for eid in lost:
            sink = self.held.pop(eid.decode(), None)
            if sink is not None:
                sink.closed = True
                log.warning(
                    "cluster: job %s was reclaimed by another consumer; dropping our copy", sink.entry
                )

    async def _reclaim(self) -> None:
        """Take over entries idle longer than ``claim_idle``: their consumer died or stopped."""
        cursor: Any = "0-0"
        for _ in range(CLAIM_ROUNDS):
            # Reclaimed jobs go before new ones: they may take room in the master's queue, not only free
            # threads (a busy cluster would otherwise leave a dead daemon's jobs waiting behind the stream).
            d = self.dispatcher
            free = max(d.free_capacity(), min(CLAIM_COUNT, d.max_pending - d.queued()))
            if free <= 0:
                return
            reply = await self.redis.execute_command(
                "XAUTOCLAIM", self.cfg.jobs, self.cfg.group, self.consumer, int(self.claim_idle * 1000), cursor,
                "COUNT", free,
            )  # fmt: skip
            cursor, claimed, deleted = streams.autoclaim_reply(reply)
            if deleted:  # 6.2 leaves them pending: ack them, there is no job to do
                await self.redis.xack(self.cfg.jobs, self.cfg.group, *deleted)
            if claimed:
                await self._take_claimed(claimed)
            if cursor in (b"0-0", "0-0"):
                return

    async def _take_claimed(self, claimed: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        ids = [eid for eid, _ in claimed]
        info = await self.redis.xpending_range(
            self.cfg.jobs, self.cfg.group, min=ids[0], max=ids[-1], count=len(ids) + len(self.held),
            consumername=self.consumer,
        )  # fmt: skip
        deliveries = {p["message_id"]: p["times_delivered"] for p in info}
        for eid, fields in claimed:
            entry = eid.decode()
            if entry in self.held:
                continue
            n = deliveries.get(eid, 1)
            self.counts["reclaimed"] += 1
            log.info("cluster: reclaimed job %s (delivery %d)", entry, n)
            if n > self.cfg.max_deliveries:
                self._dead_letter(entry, fields, n)
            else:
                self._take(entry, fields)

    def _dead_letter(self, entry: str, fields: dict[bytes, bytes], deliveries: int) -> None:
        try:
            url, job_id, reply_to, _ = streams.parse_job(fields)
        except streams.MalformedJob:
            url, job_id, reply_to = "", None, streams.reply_key(fields)
        sink = self._hold(entry, job_id, reply_to)
        frame = error_frame(
            None,
            "worker_crashed",
            f"delivered {deliveries} times without a result (max_deliveries = {self.cfg.max_deliveries}); "
            f"moved to {self.keys[3]}",
            url=url,
        )
        frame["dead_letter"] = True
        answer(sink, frame)

    async def _figures_loop(self) -> None:
        while not self._closing:
            try:
                await self._read_group_info()
            except ResponseError as e:  # e.g. the stream is not there yet (NOGROUP / no such key)
                log.debug("cluster: group figures: %s", e)
            except _DOWN:
                pass  # the read and commit loops report the state; stats shows the figures' age
            await asyncio.sleep(FIGURES_PERIOD)

    async def _read_group_info(self) -> None:
        """The group's figures for ``stats``, in one round trip, and when they were read."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xinfo_groups(self.cfg.jobs)
        pipe.get(self.keys[2])
        groups, total = await pipe.execute()
        for g in groups:
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name == self.cfg.group:
                self.group_info = {
                    "lag": g.get("lag"),
                    "pending": g.get("pending"),
                    "consumers": g.get("consumers"),
                    "cluster_total": int(total or 0),
                }
                self._last_delivered = g["last-delivered-id"]
                self._figures_at = time.monotonic()

    async def _forget_departed(self) -> None:
        """Delete the group's consumers that hold no pending entry and have not touched Redis for
        ``FORGET_AFTER`` × ``claim_idle``: daemons that stopped or died (their entries reclaimed by now).
        Without this, every restart of every daemon leaves a ``host:pid`` consumer in the group for good.
        The pending check is repeated inside the atomic FORGET script, so nothing is lost; a live daemon
        that was idle that long (its capacity all taken by local clients) is re-created by its next read."""
        forget_ms = FORGET_AFTER * self.claim_idle * 1000
        for c in await self.redis.xinfo_consumers(self.cfg.jobs, self.cfg.group):
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            if name == self.consumer or c["pending"] or c["idle"] <= forget_ms:
                continue
            if await self._forget(keys=[self.cfg.jobs], args=[self.cfg.group, name]):
                self.counts["forgotten"] += 1
                log.info("cluster: removed departed consumer %s from group %s", name, self.cfg.group)

    async def _trim_jobs(self, last_delivered: bytes) -> None:
        """Drop acknowledged jobs: every entry older than both the oldest pending one and the group's
        last delivered one is done (XTRIM MINID only cuts from the front, so the group's lag stays exact)."""
        summary = await self.redis.xpending(self.cfg.jobs, self.cfg.group)
        oldest = summary.get("min") or last_delivered
        minid = min(_id_key(oldest), _id_key(last_delivered))
        if minid > (0, 0):
            await self.redis.xtrim(self.cfg.jobs, minid=f"{minid[0]}-{minid[1]}", approximate=True)

    # -- stats ------------------------------------------------------------------------------------------

    def _figures_age(self) -> float | None:
        return None if self._figures_at is None else round(time.monotonic() - self._figures_at, 1)

    def stats(self) -> dict[str, Any]:
        return {
            "redis": streams.safe_url(self.cfg.redis),
            "state": self.state,
            "consumer": self.consumer,
            "group": self.cfg.group,
            "jobs": self.cfg.jobs,
            "lag": self.group_info.get("lag"),
            "pending": self.group_info.get("pending"),
            "consumers": self.group_info.get("consumers"),
            "cluster_total": self.group_info.get("cluster_total"),
            # seconds since the four figures above were read (about FIGURES_PERIOD while Redis answers)
            "figures_age_s": self._figures_age(),
            "held": len(self.held),
            "commit_backlog": len(self.backlog),
            **self.counts,
        }


def _id_key(eid: bytes | str) -> tuple[int, int]:
    """A stream entry id as a comparable pair."""
    ms, _, seq = (eid.decode() if isinstance(eid, bytes) else eid).partition("-")
    return int(ms), int(seq or 0)


def _log_crash(task: asyncio.Task) -> None:
    """A loop that ends by a bug says so in the log (a task's exception is otherwise silent)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("cluster: %s stopped", task.get_coro().__qualname__, exc_info=task.exception())
