"""Worker supervision: spawn, reap, bury, respawn with a backoff, and the hang watchdog.

The arbiter owns one ``Supervisor``. Children are reaped with waitpid(-1, WNOHANG) in a loop (``reap``),
and each dead worker is buried in steps (``_bury``): its committed results drained, its unanswered jobs
re-homed (those it never took without a strike), its rings freed, its counter contribution reconciled,
and it is respawned on fresh rings, with a backoff when it dies while booting. A slot that fails to boot
``MAX_BOOT_FAILURES`` times in a row is a boot loop: the supervisor says so through ``on_boot_loop`` and
the arbiter decides what to do (it stops, exit 3). Nothing here waits without bound on a peer that may
be dead: every wait is on a reaped process's ring, a non-blocking lock try, or a deadline.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from ..config import Config, hang_limit
from ..dispatch.dispatcher import Dispatcher, WorkerHandle
from ..ipc import names
from ..ipc.control import S_PID, S_READY, Control
from ..ipc.ring import Ring
from ..ipc.segment import SharedMemoryFull

log = logging.getLogger("shmfetch.master")

# glibc gives each fetch thread its own malloc arena; with lxml trees of big pages they fragment. In
# loadgen's page mix an 8-thread worker peaked at 73-77 MiB with glibc's default and 61-67 MiB with 2
# arenas; a 16-thread worker at 62-65 MiB with 2 and 58-60 MiB with 1, at the same pages/s (most
# allocation happens under the GIL anyway, so one arena is rarely contended). A MALLOC_ARENA_MAX in the
# daemon's environment wins.
WORKER_ENV = {"MALLOC_ARENA_MAX": "1", **os.environ}
BOOT_WINDOW = 2.0  # a worker that dies sooner than this after spawn counts as a boot failure
MAX_BOOT_FAILURES = 5
KILL_GRACE = 5.0  # SIGKILL takes effect at once unless the process is stuck in the kernel
BURY_GRACE = 1.0  # after every worker is dead, the burials wait on nothing of ours
WATCHDOG_PERIOD = 0.5
RESOURCE_RETRY_MAX = 2.0  # a respawn that found no room retries at most this long after the last try
# A respawn that fails for want of room (no /dev/shm for its rings, no memory, no process or descriptor
# left) is not a broken install: it is retried while the other workers serve, and never stops the daemon.
RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.ENOMEM, errno.EAGAIN, errno.EMFILE, errno.ENFILE})


class Supervisor:
    """Keeps one worker process per slot alive, on fresh rings per generation.

    ``on_boot_loop(index, last)`` is called once when slot ``index`` failed to boot too often (``last``
    says how the last attempt ended); ``on_change()`` after every burial (it wakes the arbiter's loop).
    ``env``: the workers' environment (``WORKER_ENV`` by default).
    """

    def __init__(
        self,
        cfg: Config,
        ctl: Control,
        dispatcher: Dispatcher,
        on_boot_loop: Callable[[int, str], None],
        on_change: Callable[[], None],
        env: dict[str, str] | None = None,
    ):
        self.cfg = cfg
        self.env = WORKER_ENV if env is None else env  # the workers' environment
        self.ctl = ctl
        self.dispatcher = dispatcher
        self.master_pid = os.getpid()
        self._on_boot_loop = on_boot_loop
        self._on_change = on_change
        n = cfg.daemon.workers
        self.by_pid: dict[int, WorkerHandle] = {}
        self.generations = [0] * n
        self.restarts = [0] * n
        self.served_before = [0] * n  # results served by earlier generations of each slot
        self.boot_failures = [0] * n
        self.resource_failures = [0] * n  # respawns that found no room, ever (stats, /metrics)
        self.blocked: list[str | None] = [None] * n  # why the slot's respawn waits for room, or None
        self._resource_streak = [0] * n  # such failures in a row: the retry's backoff
        self.stopping = False  # no respawns from now on
        self.forced = False  # orphans are answered, not re-homed
        self._killed: set[int] = set()  # pids we SIGKILLed ourselves (not a boot failure, even booting)
        self._watchdog: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    def stop(self, forced: bool = False) -> None:
        """Respawn nothing from now on; ``forced``: the dead workers' jobs are answered, not re-homed."""
        self.stopping = True
        self.forced = self.forced or forced

    # -- spawn ----------------------------------------------------------------------------------------

    def spawn(self, index: int) -> None:
        """Start worker ``index`` on new rings (next generation). On any failure, nothing it made is left."""
        self.generations[index] += 1
        gen = self.generations[index]
        rings: list[Ring] = []
        pid = None
        try:
            rings = self._create_rings(index, gen)
            w = WorkerHandle(index, gen, rings[0], rings[1])
            self.ctl.init_slot(index, 0, gen)
            pid = self._start_worker_process(w)
            self.dispatcher.start_collector(w)
        except BaseException:
            if pid is not None:
                _kill(pid, signal.SIGKILL)  # reaped by reap(), which ignores pids it does not know
            for ring in rings:
                ring.close()
                ring.unlink()
            raise
        w.pid = pid
        w.alive = True
        self.ctl.set_slot(index, S_PID, w.pid, size=4)  # not init_slot: the worker may be ready already
        self.by_pid[w.pid] = w
        self.dispatcher.attach(w)
        # "started" on every spawn (tests and log greps count those); a respawn says so as well.
        again = f" (respawned, restart {self.restarts[index]})" if gen > 1 else ""
        log.info("worker %d started: pid %d, generation %d%s", index, w.pid, gen, again)

    def _create_rings(self, index: int, gen: int) -> list[Ring]:
        """The request and result rings of one generation; none is left behind if the second fails."""
        r = self.cfg.ring
        ctl = self.ctl.name
        req = Ring.create_fresh(
            lambda: names.ring_name(ctl, index, gen, "req"), r.request_slots, r.request_slot_size
        )
        try:
            res = Ring.create_fresh(
                lambda: names.ring_name(ctl, index, gen, "res"), r.result_slots, r.result_slot_size
            )
        except BaseException:
            req.close()
            req.unlink()
            raise
        return [req, res]

    def _start_worker_process(self, w: WorkerHandle) -> int:
        """``python -m shmfetch.worker INDEX``, its spec (ring names, config) as JSON on its stdin.

        Not on the command line, where ``ps`` would show the whole config. The pipe is written in full and
        closed before the spawn (a config is a few KiB; a pipe holds 64 KiB), so nothing here can block.
        """
        spec = {
            "index": w.index,
            "generation": w.generation,
            "master_pid": self.master_pid,
            "req": w.req.name,
            "res": w.res.name,
            "ctl": self.ctl.name,
            "config": self.cfg.to_dict(),
        }
        data = json.dumps(spec).encode()
        rfd, wfd = os.pipe()
        try:
            os.set_blocking(wfd, False)
            if os.write(wfd, data) != len(data):
                raise OSError(errno.EMSGSIZE, f"worker spec of {len(data)} bytes does not fit in a pipe")
            os.close(wfd)
            wfd = -1
            argv = [sys.executable, "-m", "shmfetch.worker", str(w.index)]
            return os.posix_spawn(
                sys.executable, argv, self.env, file_actions=[(os.POSIX_SPAWN_DUP2, rfd, 0)]
            )
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)

    def kill(self, w: WorkerHandle) -> None:
        """SIGKILL a live worker (a corrupt result ring, a hang); its death is handled by ``reap``."""
        if w.alive:
            self._killed.add(w.pid)
            _kill(w.pid, signal.SIGKILL)

    def live(self) -> list[WorkerHandle]:
        return [w for w in self.dispatcher.handles() if w is not None and w.alive]

    # -- reap and bury --------------------------------------------------------------------------------

    def reap(self) -> None:
        """Collect every dead child without blocking, and start the burial of each worker among them."""
        while (dead := _wait_any()) is not None:
            pid, status = dead
            w = self.by_pid.pop(pid, None)
            if w is None:
                continue
            w.alive = False
            how = _describe_status(status)
            if self.stopping:
                log.info("worker %d (pid %d) exited: %s", w.index, pid, how)
            else:
                log.warning("worker %d (pid %d) died: %s", w.index, pid, how)
            task = asyncio.get_running_loop().create_task(self._bury(w, status))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _bury(self, w: WorkerHandle, status: int) -> None:
        """The steps after a worker's death, in order. None waits on a live peer: the worker is reaped, its
        collector stops at the closed ring, and the counter lock is tried without blocking."""
        await self._drain_results(w)
        self._rehome_jobs(w)
        self._free_rings(w)
        await self._count_results(w)
        if not self.stopping:
            self._respawn_later(w, status)
        self._on_change()

    async def _drain_results(self, w: WorkerHandle) -> None:
        """Let the collector deliver every result the dead worker committed, then stop."""
        w.res.close_wake()
        await w.drained.wait()

    def _rehome_jobs(self, w: WorkerHandle) -> None:
        """The dead worker's unanswered jobs: back to the queue, or ``shutting_down`` if nobody is left."""
        d = self.dispatcher
        orphans = d.detach(w)
        if self.stopping and (self.forced or not self.live()):
            for job in orphans:
                d.fail(job, "shutting_down")
        else:
            d.redispatch(orphans)

    @staticmethod
    def _free_rings(w: WorkerHandle) -> None:
        for ring in (w.req, w.res):
            ring.close()
            ring.unlink()

    async def _count_results(self, w: WorkerHandle) -> None:
        self.served_before[w.index] += w.served
        delta = await self._reconcile(w)
        if delta:
            log.info("worker %d: counted %d committed result(s) it died before counting", w.index, delta)

    async def _reconcile(self, w: WorkerHandle) -> int:
        """Count the dead worker's committed results, taking the counter lock without blocking the loop.

        The lock is held for microseconds by a running process, so tries back off from 1 ms to 50 ms; a
        holder that is stopped keeps us polling (no thread parked in the kernel for it), while ``stats``
        and signals go on being served.
        """
        delay = 0.001
        while (delta := self.ctl.reconcile(w.index, w.ok_received, blocking=False)) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return delta

    # -- respawn --------------------------------------------------------------------------------------

    def _respawn_later(self, w: WorkerHandle, status: int) -> None:
        i = w.index
        ready = bool(self.ctl.slot(i, S_READY, 4))  # read before the respawn re-inits the slot
        ours = w.pid in self._killed
        self._killed.discard(w.pid)
        if _is_boot_failure(status, time.monotonic() - w.started, w.served, ready, ours):
            self.boot_failures[i] += 1
        else:
            self.boot_failures[i] = 0
        self._schedule_respawn(i, _describe_status(status))

    def _schedule_respawn(self, i: int, last: str) -> None:
        """Respawn worker ``i`` after the boot-failure backoff, or report a boot loop after too many."""
        if self.boot_failures[i] >= MAX_BOOT_FAILURES:
            log.error(
                "worker %d failed to boot %d times in a row (last: %s); shutting down",
                i,
                self.boot_failures[i],
                last,
            )
            self._on_boot_loop(i, last)
            return
        delay = 0.0 if self.boot_failures[i] == 0 else min(5.0, 0.1 * 2 ** self.boot_failures[i])
        self.restarts[i] += 1
        asyncio.get_running_loop().call_later(delay, self._respawn, i)

    def _respawn(self, index: int) -> None:
        if self.stopping or self.dispatcher.handles()[index] is not None:
            return
        try:
            self.spawn(index)
        except Exception as e:  # whatever it was, spawn left nothing behind: try again later
            if isinstance(e, SharedMemoryFull) or (isinstance(e, OSError) and e.errno in RESOURCE_ERRNOS):
                self._retry_for_room(index, e)
                return
            log.error("cannot respawn worker %d: %s", index, e)
            self.boot_failures[index] += 1
            self._schedule_respawn(index, f"cannot respawn: {e}")
            return
        if self.blocked[index] is not None:
            log.info(
                "worker %d respawned after %d attempt(s) that found no room",
                index,
                self._resource_streak[index],
            )
        self.blocked[index] = None
        self._resource_streak[index] = 0

    def _retry_for_room(self, index: int, e: BaseException) -> None:
        """No room for the respawn: retry at a capped backoff; the live workers go on serving."""
        self.resource_failures[index] += 1
        self._resource_streak[index] += 1
        self.blocked[index] = str(e)
        delay = min(RESOURCE_RETRY_MAX, 0.1 * 2 ** self._resource_streak[index])
        log.error(
            "cannot respawn worker %d: %s; retrying in %.1fs, serving with %d live worker(s)",
            index,
            e,
            delay,
            len(self.live()),
        )
        asyncio.get_running_loop().call_later(delay, self._respawn, index)

    # -- hang watchdog --------------------------------------------------------------------------------

    def arm_watchdog(self) -> None:
        """A worker got work: check for hung workers from now on, while some worker has work (an idle
        daemon keeps no timer). Armed unconditionally: the dispatcher calls this before it records the
        job, so a look at the workers here would find none busy on a daemon's first job."""
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(WATCHDOG_PERIOD, self._check_hung)

    def _check_hung(self) -> None:
        self._watchdog = None
        limit = hang_limit(self.cfg)
        now = time.monotonic()
        for w in self.dispatcher.handles():
            if w and w.alive and w.outstanding and now - w.last_progress > limit:
                log.error(
                    "worker %d (pid %d) made no progress for %.1fs: killing it",
                    w.index,
                    w.pid,
                    now - w.last_progress,
                )
                self.kill(w)
                w.last_progress = now
        if any(w and w.outstanding for w in self.dispatcher.handles()):
            self.arm_watchdog()

    # -- stop -----------------------------------------------------------------------------------------

    async def stop_all(self, graceful: bool, grace: float) -> None:
        """``graceful``: close the request rings and give the workers ``grace`` s to leave; then SIGKILL
        whoever is left (at once when not graceful), and reap them all within ``KILL_GRACE``."""
        live = self.live()
        if graceful:
            for w in live:
                w.req.close_wake()
            if not await self._reap_until_gone(live, grace):
                log.warning("worker(s) %s did not exit: killing them", [w.pid for w in live if w.alive])
        for w in live:
            self.kill(w)
        if not await self._reap_until_gone(live, KILL_GRACE):
            log.error("worker(s) %s survive SIGKILL; leaving them", [w.pid for w in live if w.alive])

    async def _reap_until_gone(self, live: list[WorkerHandle], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(w.alive for w in live) and time.monotonic() < deadline:
            self.reap()
            await asyncio.sleep(0.02)
        return not any(w.alive for w in live)

    async def await_burials(self) -> None:
        """Let the burials finish (they count the dead workers' results), within ``BURY_GRACE``.

        Every worker is dead by now, so only a process that is not ours can still hold the counter lock.
        """
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=BURY_GRACE)
        if late:
            log.error(
                "%d worker burial(s) unfinished after %.1fs (counter lock holder: pid %s); count may be short",
                len(late),
                BURY_GRACE,
                self.ctl.lock_holder(),
            )
            for task in late:
                task.cancel()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


def _wait_any() -> tuple[int, int] | None:
    """(pid, status) of a child that has exited, or None if none has (or there are no children)."""
    try:
        pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return None
    return (pid, status) if pid else None


def _is_boot_failure(status: int, lived: float, served: int, ready: bool, killed_by_us: bool) -> bool:
    """Whether a worker's death counts toward the boot-failure backoff.

    Any death before the worker said it was ready (its slot's ``ready`` word) does: an exit (bad install,
    cannot attach) or a signal (a broken native wheel's SIGSEGV, SIGILL, seccomp's SIGSYS), however slow
    the imports are on a loaded machine; except a SIGKILL we sent ourselves (the hang watchdog, a corrupt
    ring, a stop). After ready, an exit having served nothing within ``BOOT_WINDOW`` still does (it died
    right after booting); a signal does not, so that a kill storm does not look like a boot loop. SIGBUS
    counts at any age: it is what touching shared memory that /dev/shm cannot back gives, and a new
    worker on new rings would meet the same full /dev/shm."""
    signaled = os.WIFSIGNALED(status)
    if signaled and os.WTERMSIG(status) == signal.SIGBUS:
        return True
    if not ready:
        return not (killed_by_us and signaled and os.WTERMSIG(status) == signal.SIGKILL)
    exited = os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0
    return exited and served == 0 and lived < BOOT_WINDOW


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
