"""The master: owns every shared object, supervises the workers, and runs the client-facing loop.

Shaped after gunicorn's arbiter. Signal handlers only record the signal and wake the main loop, which does
the work. Children are reaped with waitpid(-1, WNOHANG) in a loop (``reap``), and each dead worker is buried
in steps (``_bury``): its committed results drained, its unanswered jobs re-homed (those it never took
without a strike), its rings freed, its counter contribution reconciled, and it is respawned on fresh rings,
with a backoff when it dies while booting. Shutdown is staged (``_teardown``): stop accepting, drain until
``drain_timeout``, ask the workers to leave within what is left of it, then SIGKILL, reap, finish the
burials, and print ``downloaded N URLs`` as the last line of stdout. Nothing here waits without bound on a
peer that may be dead: every wait is on a reaped process's ring, a non-blocking lock try, or a deadline.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import resource
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..dispatch.dispatcher import Dispatcher, WorkerHandle
from ..frontier.admission import Frontier
from ..fronts.unix import Listener, SocketInUse, bind_exclusive
from ..ipc import names, stale
from ..ipc.control import S_BUSY, S_PID, S_READY, Control
from ..ipc.ring import Ring, unsupported_machine
from ..ipc.segment import SharedMemoryFull
from .pidfile import AlreadyRunning, PidFile, prepare_runtime_dir

if TYPE_CHECKING:
    from ..cluster.intake import ClusterIntake
    from ..fronts.http import HttpApi

log = logging.getLogger("shmfetch.master")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_WORKER_BOOT = 3
# glibc gives each fetch thread its own malloc arena; with lxml trees of big pages they fragment. In
# loadgen's page mix an 8-thread worker peaked at 73-77 MiB with glibc's default and 61-67 MiB with 2
# arenas; a 16-thread worker at 62-65 MiB with 2 and 58-60 MiB with 1, at the same pages/s (most
# allocation happens under the GIL anyway, so one arena is rarely contended). A MALLOC_ARENA_MAX in the
# daemon's environment wins.
WORKER_ENV = {"MALLOC_ARENA_MAX": "1", **os.environ}
BOOT_WINDOW = 2.0  # a worker that dies sooner than this after spawn counts as a boot failure
MAX_BOOT_FAILURES = 5
WORKER_EXIT_GRACE = 5.0  # a worker with nothing to do leaves this long after its request ring closes
MIN_EXIT_GRACE = 0.5
KILL_GRACE = 5.0  # SIGKILL takes effect at once unless the process is stuck in the kernel
BURY_GRACE = 1.0  # after every worker is dead, the burials wait on nothing of ours


class StartupError(RuntimeError):
    """The daemon cannot start (another one is running, a path is unusable). Exit code 2."""


class Master:
    def __init__(self, cfg: Config, log_handler: logging.Handler | None = None, log_queue: Any = None):
        self.cfg = cfg
        self.pid = os.getpid()
        self.log_handler = log_handler  # the handler that writes (SIGHUP reopens its file)
        self.log_queue = log_queue  # cli._LogQueue in front of it, or None; its ``dropped`` goes in stats
        self.pidfile: PidFile | None = None
        self.sock: socket.socket | None = None  # the listening socket, bound by check_not_running
        self._sock_id: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file at its path
        self.ctl: Control | None = None
        self.dispatcher: Dispatcher | None = None
        self.listener: Listener | None = None
        self.http: HttpApi | None = None  # the optional HTTP API ([http] listen)
        self.cluster: ClusterIntake | None = None  # the optional Redis Streams intake ([cluster] redis)
        self.by_pid: dict[int, WorkerHandle] = {}
        self.generations = [0] * cfg.daemon.workers
        self.restarts = [0] * cfg.daemon.workers
        self.served_before = [0] * cfg.daemon.workers  # results served by earlier generations of each slot
        self.boot_failures = [0] * cfg.daemon.workers
        self.signals: list[int] = []
        self.wake: asyncio.Event | None = None
        self.stopping = False
        self.forced = False
        self.drain_deadline: float | None = None  # monotonic; set by the first stop signal
        self.exit_code = EXIT_OK
        self.started = time.monotonic()
        self._watchdog: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- start ----------------------------------------------------------------------------------------

    def check_not_running(self) -> None:
        """Claim this config, or refuse to start; then clear what dead daemons left in /dev/shm.

        The pidfile lock comes first, so two ``serve`` on one config cannot both get past here; then the
        socket is bound without ever replacing a live one (``bind_exclusive``), so two configs that share
        a socket path cannot both run either. A refusal gives back what was claimed before it.
        """
        d = self.cfg.daemon
        if why := unsupported_machine():
            raise StartupError(why)
        try:
            for path in (d.pidfile, d.socket):
                prepare_runtime_dir(path)
        except OSError as e:
            raise StartupError(f"unsafe runtime directory: {e.strerror or e}") from None
        try:
            self.pidfile = PidFile.acquire(d.pidfile)
        except AlreadyRunning as e:
            raise StartupError(str(e)) from None
        except OSError as e:
            raise StartupError(f"cannot create pidfile {d.pidfile}: {e.strerror or e}") from None
        try:
            self.sock = bind_exclusive(d.socket)
            st = os.stat(d.socket)
            self._sock_id = (st.st_dev, st.st_ino)
        except SocketInUse as e:
            self._release_control()
            raise StartupError(str(e)) from None
        except OSError as e:
            self._release_control()
            raise StartupError(f"cannot listen on {d.socket}: {e.strerror or e}") from None
        for entry in stale.remove_stale():
            log.info("removed stale shared object /dev/shm/%s", entry)

    async def run(self) -> int:
        """Start the workers and serve until stopped. Whatever a start creates is removed if it fails."""
        try:
            try:
                await self._start()
                await self._main_loop()
            finally:
                await self._teardown()  # reaps the workers a failed start had already spawned
            print(f"downloaded {self.downloaded()} URLs", flush=True)
            return self.exit_code
        except StartupError as e:
            log.error("cannot start: %s", e)
            print(f"shmfetch: {e}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            self._release_control()

    async def _start(self) -> None:
        _raise_fd_limit(self.cfg.daemon.max_connections + 64 * self.cfg.daemon.workers + 64)
        loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        d = self.cfg.daemon
        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            loop.add_signal_handler(sig, self._record_signal, sig)
        try:
            self.ctl = Control.create_fresh(lambda: names.control_name(self.pid), d.workers)
        except SharedMemoryFull as e:
            raise StartupError(str(e)) from None
        dispatcher = Dispatcher(loop, d.max_pending, d.max_inflight_per_worker)
        dispatcher.workers = [None] * d.workers
        dispatcher.on_idle = self.wake.set
        dispatcher.on_busy = self._arm_watchdog
        dispatcher.on_corrupt = lambda w: _kill(w.pid, signal.SIGKILL) if w.alive else None
        dispatcher.frontier = Frontier(self.cfg, dispatcher, loop)
        self.dispatcher = dispatcher  # only with its frontier: _teardown relies on it
        self.listener = Listener(
            self.dispatcher, self.stats, d.max_frame_bytes, d.max_connections, d.client_buffer_bytes,
            fetch_cfg=self.cfg.fetch,
        )  # fmt: skip
        # From here on a failure is cleaned up by _teardown (workers already up) and _release_control.
        try:
            for i in range(d.workers):
                self.spawn(i)
        except SharedMemoryFull as e:
            raise StartupError(str(e)) from None
        await self.listener.start(self.sock)
        if self.cfg.http.listen:
            await self._start_http()
        if self.cfg.cluster.redis:
            self._start_cluster()
        log.info("shmfetch master %d listening on %s with %d workers", self.pid, d.socket, d.workers)

    async def _start_http(self) -> None:
        d, listen = self.cfg.daemon, self.cfg.http.listen
        try:
            from ..fronts.http import (
                HttpApi,  # imported only when configured: aiohttp is not loaded otherwise
            )

            self.http = HttpApi(self.dispatcher, self.stats, d.max_connections, fetch_cfg=self.cfg.fetch)
            await self.http.start(listen)
        except (ImportError, OSError) as e:
            # Stop through the normal path (teardown reaps the workers and unlinks every object).
            log.error("cannot listen for HTTP on %s: %s", listen, e)
            self.exit_code = EXIT_USAGE
            self.stopping = self.forced = True
            self.wake.set()
            return
        log.info("HTTP API listening on %s", listen)

    def _start_cluster(self) -> None:
        from ..cluster.intake import ClusterIntake  # imported only when configured
        from ..cluster.streams import claim_idle

        self.cluster = ClusterIntake(self.cfg.cluster, self.dispatcher, claim_idle(self.cfg), self.cfg.fetch)
        self.cluster.start()

    def _stop_accepting(self) -> None:
        """No new work from now on: new requests are refused and the listening sockets close."""
        self.stopping = True
        self.dispatcher.accepting = False
        for front in (self.listener, self.http, self.cluster):
            if front is not None:
                front.stop_accepting()

    def _record_signal(self, sig: int) -> None:
        self.signals.append(sig)
        self.wake.set()

    # -- main loop ------------------------------------------------------------------------------------

    async def _main_loop(self) -> None:
        while True:
            timeout = None
            if self.drain_deadline is not None:
                timeout = max(0.0, self.drain_deadline - time.monotonic())
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass
            self.wake.clear()
            while self.signals:
                sig = self.signals.pop(0)
                if sig == signal.SIGCHLD:
                    self.reap()
                elif sig == signal.SIGHUP:
                    self.reopen_logs()
                elif not self.stopping:
                    log.info(
                        "got %s: draining (up to %.1fs)",
                        signal.Signals(sig).name,
                        self.cfg.daemon.drain_timeout,
                    )
                    self._stop_accepting()
                    self.drain_deadline = time.monotonic() + self.cfg.daemon.drain_timeout
                else:
                    log.info("got %s during drain: stopping now", signal.Signals(sig).name)
                    self.forced = True
            if self.exit_code == EXIT_WORKER_BOOT:
                self.stopping = self.forced = True
            if self.stopping and (
                self.forced or not self.dispatcher.inflight() or time.monotonic() >= self.drain_deadline
            ):
                return

    # -- workers --------------------------------------------------------------------------------------

    def spawn(self, index: int) -> None:
        """Start worker ``index`` on new rings (next generation). On any failure, nothing it made is left."""
        r = self.cfg.ring
        self.generations[index] += 1
        gen = self.generations[index]
        rings: list[Ring] = []
        pid = None
        try:
            rings.append(
                Ring.create_fresh(
                    lambda: names.ring_name(self.ctl.name, index, gen, "req"),
                    r.request_slots,
                    r.request_slot_size,
                )
            )
            rings.append(
                Ring.create_fresh(
                    lambda: names.ring_name(self.ctl.name, index, gen, "res"),
                    r.result_slots,
                    r.result_slot_size,
                )
            )
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
        self.dispatcher.workers[index] = w
        # "started" on every spawn (tests and log greps count those); a respawn says so as well.
        again = f" (respawned, restart {self.restarts[index]})" if gen > 1 else ""
        log.info("worker %d started: pid %d, generation %d%s", index, w.pid, gen, again)
        self.dispatcher.pump()

    def _start_worker_process(self, w: WorkerHandle) -> int:
        """``python -m shmfetch.worker INDEX``, its spec (ring names, config) as JSON on its stdin.

        Not on the command line, where ``ps`` would show the whole config. The pipe is written in full and
        closed before the spawn (a config is a few KiB; a pipe holds 64 KiB), so nothing here can block.
        """
        spec = {
            "index": w.index,
            "generation": w.generation,
            "master_pid": self.pid,
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
                sys.executable, argv, WORKER_ENV, file_actions=[(os.POSIX_SPAWN_DUP2, rfd, 0)]
            )
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)

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
        self.wake.set()

    async def _drain_results(self, w: WorkerHandle) -> None:
        """Let the collector deliver every result the dead worker committed, then stop."""
        w.res.close_wake()
        await w.drained.wait()

    def _rehome_jobs(self, w: WorkerHandle) -> None:
        """The dead worker's unanswered jobs: back to the queue, or ``shutting_down`` if nobody is left."""
        d = self.dispatcher
        orphans = d.orphans(w)
        if d.workers[w.index] is w:
            d.workers[w.index] = None
        if self.stopping and (self.forced or not any(x and x.alive for x in d.workers)):
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

    def _respawn_later(self, w: WorkerHandle, status: int) -> None:
        i = w.index
        ready = bool(self.ctl.slot(i, S_READY, 4))  # read before the respawn re-inits the slot
        if _is_boot_failure(status, time.monotonic() - w.started, w.served, ready):
            self.boot_failures[i] += 1
        else:
            self.boot_failures[i] = 0
        self._schedule_respawn(i, _describe_status(status))

    def _schedule_respawn(self, i: int, last: str) -> None:
        """Respawn worker ``i`` after the boot-failure backoff, or stop (exit 3) after too many failures."""
        if self.boot_failures[i] >= MAX_BOOT_FAILURES:
            log.error(
                "worker %d failed to boot %d times in a row (last: %s); shutting down",
                i,
                self.boot_failures[i],
                last,
            )
            self.exit_code = EXIT_WORKER_BOOT
            self.wake.set()
            return
        delay = 0.0 if self.boot_failures[i] == 0 else min(5.0, 0.1 * 2 ** self.boot_failures[i])
        self.restarts[i] += 1
        asyncio.get_running_loop().call_later(delay, self._respawn, i)

    def _respawn(self, index: int) -> None:
        if self.stopping or self.dispatcher.workers[index] is not None:
            return
        try:
            self.spawn(index)
        except Exception as e:  # whatever it was, spawn left nothing behind: try again later
            log.error("cannot respawn worker %d: %s", index, e)
            self.boot_failures[index] += 1
            self._schedule_respawn(index, f"cannot respawn: {e}")

    def _arm_watchdog(self) -> None:
        """Check for hung workers only while some worker has work: an idle daemon keeps no timer."""
        if self._watchdog is None and any(w and w.outstanding for w in self.dispatcher.workers):
            self._watchdog = asyncio.get_running_loop().call_later(0.5, self._check_hung)

    def _check_hung(self) -> None:
        self._watchdog = None
        # A fetch ends by [fetch] timeout; a worker with work that returns nothing for longer is stuck.
        limit = self.cfg.fetch.timeout + self.cfg.daemon.hang_grace
        now = time.monotonic()
        for w in self.dispatcher.workers:
            if w and w.alive and w.outstanding and now - w.last_progress > limit:
                log.error(
                    "worker %d (pid %d) made no progress for %.1fs: killing it",
                    w.index,
                    w.pid,
                    now - w.last_progress,
                )
                _kill(w.pid, signal.SIGKILL)
                w.last_progress = now
        self._arm_watchdog()

    # -- stop -----------------------------------------------------------------------------------------

    async def _teardown(self) -> None:
        """Stop in steps, each bounded in time: workers, their burials, the last answers, the front ends."""
        if self.dispatcher is None:
            return
        self._stop_accepting()
        await self._stop_workers()
        await self._await_burials()
        self._answer_leftovers()
        await self._close_fronts()
        self._check_count()
        self.dispatcher.frontier.close()

    async def _stop_workers(self) -> None:
        """Staged, as gunicorn's arbiter: with nothing left to do, close the request rings and give the
        workers what is left of the drain time (``WORKER_EXIT_GRACE`` if no signal set one, at least
        ``MIN_EXIT_GRACE``) to leave; then (at once, when forced or work remains) SIGKILL."""
        live = [w for w in self.dispatcher.workers if w is not None and w.alive]
        if not (self.forced or self.dispatcher.inflight()):
            for w in live:
                w.req.close_wake()
            grace = WORKER_EXIT_GRACE
            if self.drain_deadline is not None:
                grace = max(MIN_EXIT_GRACE, self.drain_deadline - time.monotonic())
            if not await self._reap_until_gone(live, grace):
                log.warning("worker(s) %s did not exit: killing them", [w.pid for w in live if w.alive])
        for w in live:
            if w.alive:
                _kill(w.pid, signal.SIGKILL)
        if not await self._reap_until_gone(live, KILL_GRACE):
            log.error("worker(s) %s survive SIGKILL; leaving them", [w.pid for w in live if w.alive])

    async def _reap_until_gone(self, live: list[WorkerHandle], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(w.alive for w in live) and time.monotonic() < deadline:
            self.reap()
            await asyncio.sleep(0.02)
        return not any(w.alive for w in live)

    async def _await_burials(self) -> None:
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

    def _answer_leftovers(self) -> None:
        if n := self.dispatcher.fail_all("shutting_down"):
            log.warning("answered %d unfinished request(s) with shutting_down", n)
        if self.listener is not None:
            for conn, req_id in self.listener.exit_waiters:
                conn.send({"id": req_id, "ok": True, "downloaded": self.downloaded()})

    async def _close_fronts(self) -> None:
        if self.cluster is not None:  # commit the results of finished jobs (bounded by drain_timeout)
            await self.cluster.close(self.cfg.daemon.drain_timeout)
        if self.listener is not None:
            await self.listener.close_all()
        if self.http is not None:
            await self.http.close_all()

    def _check_count(self) -> None:
        if self.ctl is not None and self.ctl.counter != self.dispatcher.ok_total:
            log.error(
                "counter %d differs from ok results delivered %d", self.ctl.counter, self.dispatcher.ok_total
            )

    def _unlink_socket(self) -> None:
        """Remove our socket's name, only if it is still ours (the file we linked there)."""
        try:
            st = os.stat(self.cfg.daemon.socket)
            if (st.st_dev, st.st_ino) == self._sock_id:
                os.unlink(self.cfg.daemon.socket)
        except FileNotFoundError:
            pass

    def _release_control(self) -> None:
        """Give back what check_not_running and run claimed: socket, control segment, then the pidfile lock
        (last, so that the next daemon starts only once everything of ours is gone). Safe to call twice."""
        if self.sock is not None:
            self.sock.close()
            self._unlink_socket()
            self.sock = None
        if self.ctl is not None:
            self.ctl.unlink()  # while its life lock is still ours (stale.py)
            self.ctl.close()
            self.ctl = None
        if self.pidfile is not None:
            self.pidfile.release()
            self.pidfile = None

    # -- misc -----------------------------------------------------------------------------------------

    def reopen_logs(self) -> None:
        h = self.log_handler
        if isinstance(h, logging.FileHandler):
            h.acquire()
            try:
                h.close()
                h.stream = h._open()
            finally:
                h.release()
            log.info("log file reopened")

    def downloaded(self) -> int:
        """The SIGUSR1 count: the workers' shared counter, plus cache answers if [cache] count_hits."""
        fr = self.dispatcher.frontier if self.dispatcher is not None else None
        return self.ctl.counter + (fr.counted_hits if fr is not None else 0)

    def stats(self) -> dict[str, Any]:
        d = self.dispatcher
        workers = []
        for i, w in enumerate(d.workers):
            workers.append(
                {
                    "index": i,
                    "pid": w.pid if w else None,
                    "alive": bool(w and w.alive),
                    "ready": bool(w and w.alive and self.ctl.slot(i, S_READY, 4)),  # booted, serving
                    "generation": self.generations[i],
                    "restarts": self.restarts[i],
                    # Counted by the master as results arrive, so a client that has its answers sees
                    # them all here (the worker's own slot is written a moment after the commit).
                    "served": self.served_before[i] + (w.served if w else 0),
                    "served_by_pid": w.served if w else 0,
                    "in_flight": len(w.outstanding) if w else 0,
                    "queued": max(0, len(w.outstanding) - self.ctl.slot(i, S_BUSY)) if w else 0,
                }
            )
        return {
            "pid": self.pid,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "downloaded": self.downloaded(),
            "ok_delivered": d.ok_total,
            "failures": dict(d.failures),
            "in_flight": d.inflight(),
            "pending": d.queued(),
            "dispatched": d.dispatched(),
            "retries": d.redispatched + d.frontier.retries,
            "pages_per_s_10s": round(d.rate(10), 3),
            "pages_per_s_60s": round(d.rate(60), 3),
            "connections": len(self.listener.connections),
            "http_connections": len(self.http.connections) if self.http is not None else 0,
            "stopping": self.stopping,
            "log_dropped": self.log_queue.dropped if self.log_queue is not None else 0,
            "workers": workers,
            "frontier": d.frontier.stats(),
            "cluster": self.cluster.stats() if self.cluster is not None else None,
        }


def _raise_fd_limit(want: int) -> None:
    """Each client connection is a descriptor; lift the soft limit toward what max_connections needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


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


def _is_boot_failure(status: int, lived: float, served: int, ready: bool) -> bool:
    """A worker that exits by itself having served nothing, before it said it was ready (its slot's
    ``ready`` word) or early, failed to boot (bad install, cannot attach). "Before ready" holds however slow
    the imports are on a loaded machine; "early" covers a worker that died right after. One killed by a
    signal did not: a kill storm must not look like a boot loop. Except SIGBUS, at any age: it is what
    touching shared memory that /dev/shm cannot back gives, and a new worker on new rings would meet the
    same full /dev/shm."""
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGBUS:
        return True
    exited = os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0
    return exited and served == 0 and (not ready or lived < BOOT_WINDOW)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
