"""The arbiter: claims the daemon's resources, composes its parts, and runs the signal loop.

Shaped after gunicorn's arbiter. Signal handlers only record the signal and wake the main loop, which
hands each one to a small ``handle_<signal>`` method: SIGCHLD reaps, SIGHUP reopens the log, and SIGUSR1,
SIGTERM and SIGINT stop. Workers are the supervisor's (supervisor.py); the stats document is built by
stats.py. Shutdown is staged (``_teardown``): stop accepting, drain until ``drain_timeout``, ask the
workers to leave within what is left of it, then SIGKILL, reap, finish the burials, and print
``downloaded N URLs`` as the last line of stdout. A second stop signal during the drain skips to the
forced stop; one during the teardown stops the wait for Redis to take the last results. Every resource
(pidfile, socket, log file, shared memory, HTTP port) is claimed before any worker starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from ..config import Config, claim_idle
from ..crawl.crawl import Crawls
from ..dispatch.dispatcher import Dispatcher
from ..frontier.admission import Frontier
from ..fronts.unix import Listener, SocketInUse, bind_exclusive
from ..intake import Intake
from ..ipc import names, stale
from ..ipc.control import Control
from ..ipc.ring import unsupported_machine
from ..ipc.segment import SharedMemoryFull
from . import stats as stats_doc
from .pidfile import AlreadyRunning, PidFile, prepare_runtime_dir
from .supervisor import Supervisor

if TYPE_CHECKING:
    from ..cluster.intake import ClusterIntake
    from ..fronts.http import HttpApi

log = logging.getLogger("shmfetch.master")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_WORKER_BOOT = 3
WORKER_EXIT_GRACE = 5.0  # a worker with nothing to do leaves this long after its request ring closes
MIN_EXIT_GRACE = 0.5
SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)


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
        self.supervisor: Supervisor | None = None
        self.listener: Listener | None = None
        self.crawls: Crawls | None = None  # the crawls in progress (shmfetch/crawl)
        self.http: HttpApi | None = None  # the optional HTTP API ([http] listen)
        self.cluster: ClusterIntake | None = None  # the optional Redis Streams intake ([cluster] redis)
        self.signals: list[int] = []
        self.wake: asyncio.Event | None = None
        self.stopping = False
        self.forced = False
        self.drain_deadline: float | None = None  # monotonic; set by the first stop signal
        self.stop_signals = 0  # SIGUSR1, SIGTERM and SIGINT received so far
        self.exit_code = EXIT_OK
        self.started = time.monotonic()

    # -- claim ----------------------------------------------------------------------------------------

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

    # -- run ------------------------------------------------------------------------------------------

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
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._record_signal, sig)
        try:
            self.ctl = Control.create_fresh(lambda: names.control_name(self.pid), d.workers)
        except SharedMemoryFull as e:
            raise StartupError(str(e)) from None
        self._compose(loop)
        # From here on a failure is cleaned up by _teardown (workers already up) and _release_control.
        if self.http is not None:  # every resource is claimed before any worker starts
            await self._start_http()
        try:
            for i in range(d.workers):
                self.supervisor.spawn(i)
        except SharedMemoryFull as e:
            raise StartupError(str(e)) from None
        await self.listener.start(self.sock)
        if self.cluster is not None:
            self.cluster.start()
        log.info("shmfetch master %d listening on %s with %d workers", self.pid, d.socket, d.workers)

    def _compose(self, loop: asyncio.AbstractEventLoop) -> None:
        """Build the parts and wire them together: the one place where they meet. The dispatcher owns the
        frontier (cache, robots.txt, per-host gate), which answers through the dispatcher's callbacks; every
        front takes the one intake path."""
        cfg, d = self.cfg, self.cfg.daemon
        dispatcher = Dispatcher(
            loop, d.workers, d.max_pending, d.max_inflight_per_worker, d.threads,
            make_frontier=lambda fail, pump: Frontier(cfg, loop, fail, pump),
            on_idle=self.wake.set,
            on_busy=lambda: self.supervisor.arm_watchdog(),
            on_corrupt=lambda w: self.supervisor.kill(w),
        )  # fmt: skip
        self.supervisor = Supervisor(cfg, self.ctl, dispatcher, self._on_boot_loop, self.wake.set)
        self.dispatcher = dispatcher  # only with its frontier and supervisor: _teardown relies on them
        self.intake = Intake(dispatcher.submit, cfg.fetch)
        self.crawls = Crawls(cfg, self.intake)  # its pages go through the same intake
        self.intake.start_crawl = self.crawls.start
        self.listener = Listener(
            self.intake, self.stats, d.max_frame_bytes, d.max_connections, d.client_buffer_bytes
        )
        if cfg.http.listen:
            try:  # imported only when configured: aiohttp is not loaded otherwise
                from ..fronts.http import HttpApi
            except ImportError as e:
                raise StartupError(f"cannot listen for HTTP on {cfg.http.listen}: {e}") from None
            self.http = HttpApi(self.intake, self.stats, d.max_connections, http_cfg=cfg.http)
        if cfg.cluster.redis:
            from ..cluster.intake import ClusterIntake  # imported only when configured

            self.cluster = ClusterIntake(cfg.cluster, self.intake, dispatcher, claim_idle(cfg))

    async def _start_http(self) -> None:
        listen = self.cfg.http.listen
        try:
            await self.http.start(listen)
        except OSError as e:
            raise StartupError(f"cannot listen for HTTP on {listen}: {e.strerror or e}") from None
        log.info("HTTP API listening on %s", listen)

    # -- signals and the loop -------------------------------------------------------------------------

    def _record_signal(self, sig: int) -> None:
        self.signals.append(sig)
        self.wake.set()

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
            self._dispatch_signals()
            if self._done():
                return

    def _dispatch_signals(self) -> None:
        """Each recorded signal, in order, to its ``handle_<name>`` (SIGCHLD -> ``handle_chld``)."""
        while self.signals:
            sig = signal.Signals(self.signals.pop(0))
            getattr(self, f"handle_{sig.name[3:].lower()}")()

    def _done(self) -> bool:
        """Stopping, and forced, or nothing is left to answer, or the drain time is up."""
        if not self.stopping:
            return False
        return self.forced or not self.dispatcher.inflight() or time.monotonic() >= self.drain_deadline

    def handle_chld(self) -> None:
        self.supervisor.reap()

    def handle_hup(self) -> None:
        self.reopen_logs()

    def handle_usr1(self) -> None:
        self._stop_signal(signal.SIGUSR1)

    def handle_term(self) -> None:
        self._stop_signal(signal.SIGTERM)

    def handle_int(self) -> None:
        self._stop_signal(signal.SIGINT)

    def _stop_signal(self, sig: signal.Signals) -> None:
        """The first stop signal starts the drain; the next one forces the stop."""
        self.stop_signals += 1
        if not self.stopping:
            log.info("got %s: draining (up to %.1fs)", sig.name, self.cfg.daemon.drain_timeout)
            self._stop_accepting()
            self.drain_deadline = time.monotonic() + self.cfg.daemon.drain_timeout
        else:
            log.info("got %s during drain: stopping now", sig.name)
            self._force()

    def _on_boot_loop(self, index: int, last: str) -> None:
        """The supervisor gave up on a slot that cannot boot: stop at once, exit 3."""
        self.exit_code = EXIT_WORKER_BOOT
        self._force()
        self.wake.set()

    def _stop_accepting(self) -> None:
        """No new work from now on: new requests are refused and the listening sockets close."""
        self.stopping = True
        self.supervisor.stop()
        self.dispatcher.stop_accepting()
        for front in (self.listener, self.http, self.cluster):
            if front is not None:
                front.stop_accepting()

    def _force(self) -> None:
        """Stop now: no more waiting for work in progress."""
        self.stopping = self.forced = True
        self.supervisor.stop(forced=True)

    # -- stop -----------------------------------------------------------------------------------------

    async def _teardown(self) -> None:
        """Stop in steps, each bounded in time: workers, their burials, the last answers, the front ends."""
        if self.dispatcher is None:
            return
        self._stop_accepting()
        await self._stop_workers()
        await self.supervisor.await_burials()
        self._answer_leftovers()
        await self._close_fronts()
        self._check_count()
        self.dispatcher.frontier.close()

    async def _stop_workers(self) -> None:
        """Staged, as gunicorn's arbiter: with nothing left to do, close the request rings and give the
        workers what is left of the drain time (``WORKER_EXIT_GRACE`` if no signal set one, at least
        ``MIN_EXIT_GRACE``) to leave; then (at once, when forced or work remains) SIGKILL."""
        graceful = not (self.forced or self.dispatcher.inflight())
        grace = WORKER_EXIT_GRACE
        if self.drain_deadline is not None:
            grace = max(MIN_EXIT_GRACE, self.drain_deadline - time.monotonic())
        await self.supervisor.stop_all(graceful, grace)

    def _answer_leftovers(self) -> None:
        if n := self.dispatcher.fail_all("shutting_down"):
            log.warning("answered %d unfinished request(s) with shutting_down", n)
        if self.listener is not None:
            for conn, req_id in self.listener.exit_waiters:
                conn.send({"id": req_id, "ok": True, "downloaded": self.downloaded()})

    async def _close_fronts(self) -> None:
        if self.cluster is not None:
            await self._close_cluster()
        if self.listener is not None:
            await self.listener.close_all()
        if self.http is not None:
            await self.http.close_all()

    async def _close_cluster(self) -> None:
        """Commit the results of finished jobs, for up to ``drain_timeout``; a stop signal that arrives
        meanwhile (Redis is down, the operator asks again) cuts the wait short. Other signals are served."""
        stops = self.stop_signals
        closing = asyncio.ensure_future(self.cluster.close(self.cfg.daemon.drain_timeout))
        while not closing.done():
            woken = asyncio.ensure_future(self.wake.wait())
            await asyncio.wait({closing, woken}, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            self.wake.clear()
            self._dispatch_signals()
            if self.stop_signals > stops:
                log.warning("cluster: not waiting any longer for Redis to take the results")
                self.cluster.cut_short()
        await closing

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
        return stats_doc.document(
            pid=self.pid,
            started=self.started,
            downloaded=self.downloaded(),
            stopping=self.stopping,
            log_dropped=self.log_queue.dropped if self.log_queue is not None else 0,
            dispatcher=self.dispatcher,
            supervisor=self.supervisor,
            ctl=self.ctl,
            fronts={
                "listener": self.listener, "http": self.http, "cluster": self.cluster, "crawls": self.crawls,
            },  # fmt: skip
            request_caps={"timeout": self.cfg.fetch.timeout, "max_bytes": self.cfg.fetch.max_bytes},
        )


def _raise_fd_limit(want: int) -> None:
    """Each client connection is a descriptor; lift the soft limit toward what max_connections needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
