"""The worker process: take requests from its ring, fetch and extract, publish results, count successes.

Started by the master as ``python -m shmfetch.worker INDEX`` with its SPEC as JSON on stdin (ring names,
slot index, generation, the validated config), so that ``ps`` shows which worker it is, not its config. A fresh interpreter rather than fork(), because the master runs threads
and an event loop, and forking a threaded process copies locks in whatever state they are in.

Threads. ``threads`` fetcher threads take turns as the ring's single consumer (``_take``: leader/follower,
so a request goes straight to the thread that will fetch it; the most recently idle thread leads next), and
take turns as the result ring's single producer. A thread takes a request only when it is free to fetch it, so requests
wait in shared memory, where the master can see them, not in a private queue.
"""

from __future__ import annotations

import ctypes
import json
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from typing import Any

from ..config import Config, WatchedLogFileHandler
from ..extract.page import page_fetcher
from ..fetch.fetcher import Fetcher
from ..ipc import faults
from ..ipc.control import S_BUSY, S_READY, Control
from ..ipc.ring import Ring, RingClosed
from ..options import effective
from ..protocol import Outcome, pack_result, unpack

log = logging.getLogger("shmfetch.worker")

EXIT_BOOT_ERROR = 3
PR_SET_NAME = 15


def _set_process_name(index: int) -> None:
    """Name the thread group ``shmfetch-wINDEX`` (``ps -o comm``, ``top``, ``pgrep``); at most 15 bytes."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, f"shmfetch-w{index}".encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _internal_error(e: BaseException) -> Outcome:
    """The answer for a request the worker failed on: a bug, said in words (the log has the traceback)."""
    return Outcome(False, error="internal_error", message=f"the worker failed on this request: {e}")


class Worker:
    def __init__(self, cfg: Config, index: int, req: Ring, res: Ring, ctl: Control):
        self.cfg = cfg
        self.index = index
        self.req = req
        self.res = res
        self.ctl = ctl
        self._take_lock = threading.Lock()
        self._leading = False  # a thread is the ring's consumer (or has been handed the ring)
        self._idle: list[threading.Lock] = []  # threads waiting to consume, the most recently idle last
        self._put_lock = threading.Lock()
        self._closing = False
        self._busy = 0

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._thread_main, name=f"fetch-{i}", daemon=True)
            for i in range(self.cfg.daemon.threads)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _take(self, wake: threading.Lock) -> Any:
        """Wait to be the ring's consumer, take one request, and hand the ring on.

        The next consumer is the thread that went idle *last* (a stack, not a queue): requests one at a
        time then alternate between two warm threads instead of rotating through all 16 threads' stacks,
        Sessions and connections. p50 round trip of a small page, medians of 5 alternated runs: 2 562 µs
        against 2 659 µs with a plain lock (docs/BENCHMARKS.md, P5).
        """
        with self._take_lock:
            follower = self._leading
            if follower:
                self._idle.append(wake)
            self._leading = True
        if follower:
            wake.acquire()  # released by the consumer before us: we consume now
        try:
            msg = None if self._closing else self.req.get(unpack)
        except RingClosed:
            self._closing = True
            msg = None
        finally:
            with self._take_lock:
                if self._idle:
                    self._idle.pop().release()
                else:
                    self._leading = False
        return msg

    def _thread_main(self) -> None:
        # answer_pauses: the master pauses hosts
        fetcher = page_fetcher(self.cfg.fetch, self.cfg.security, answer_pauses=True, pdf=self.cfg.pdf)
        wake = threading.Lock()
        wake.acquire()  # held: _take blocks on it until another thread hands the ring over
        try:
            while (msg := self._take(wake)) is not None:
                self._serve(fetcher, msg)
        finally:
            fetcher.close()

    def _serve(self, fetcher: Fetcher, msg: Any) -> None:
        """Answer one request taken from the ring. Whatever fails after the take, the request is answered
        (``internal_error``) and this thread goes on serving: a request nobody answers waits for its
        client's timeout, and a silently dead thread is invisible to the master's watchdog while the
        other threads make progress."""
        t0 = time.perf_counter()
        ticket = msg[0] if isinstance(msg, (list, tuple)) and msg else None
        if ticket is None:
            log.error("worker %d: malformed request record %r", self.index, msg)
            return  # nothing to answer it by
        self._set_busy(+1)
        try:
            url = msg[1] if len(msg) > 1 else None
            out = self._outcome(fetcher, msg, url)
            self._commit(ticket, out)
        finally:
            self._set_busy(-1)
        if log.isEnabledFor(logging.DEBUG):
            out_ms = (time.perf_counter() - t0) * 1000.0
            log.debug("%s: fetched %s in %.1f ms", url, "ok" if out.ok else out.error, out_ms)

    def _outcome(self, fetcher: Fetcher, msg: Any, url: Any) -> Outcome:
        """The request's Outcome; an exception on the way is an ``internal_error`` Outcome."""
        try:
            # The master checked the options (options.check); the config fills in the rest. A request
            # without any (nil) uses the Fetcher's defaults, built once.
            given = msg[2] if len(msg) > 2 else None
            opts = effective(given, self.cfg.fetch) if isinstance(given, dict) else None
            if faults.ACTIVE:
                faults.hit("worker.after_take")
            if not isinstance(url, str):
                return Outcome(False, error="invalid_url", message="the request carries no URL")
            return fetcher.fetch(url, opts)
        except Exception as e:  # Fetcher.fetch promises not to raise; a bug must still answer the client
            log.exception("worker %d: request for %r failed", self.index, url)
            return _internal_error(e)

    def _commit(self, ticket: Any, out: Outcome) -> None:
        """Publish the result; from the put on the master owns it. Counted after the commit, never before:
        see docs/RING.md, "why it stays exact when a worker dies"."""
        try:
            payload = pack_result(ticket, out)
        except Exception as e:  # an Outcome that cannot be packed is still answered
            log.exception("worker %d: cannot pack the result for ticket %r", self.index, ticket)
            out = _internal_error(e)
            payload = pack_result(ticket, out)
        with self._put_lock:
            self.res.put(payload)
        if faults.ACTIVE:
            faults.hit("worker.after_commit")
        if out.ok:
            self.ctl.increment(self.index)

    def _set_busy(self, delta: int) -> None:
        with self._put_lock:
            self._busy += delta
            self.ctl.set_slot(self.index, S_BUSY, self._busy)


def main() -> int:
    faults.arm_from_env()  # first: a crash-point test may aim at anything after this
    spec = json.loads(sys.stdin.buffer.read())  # the master wrote it whole and closed the pipe
    if os.getppid() != spec["master_pid"]:
        return EXIT_BOOT_ERROR  # the master died before the kernel could tie us to it
    _set_process_name(spec["index"])
    # The master decides when we stop (it closes our ring); a Ctrl-C or a USR1 sent to the whole process
    # group must not kill us in the middle of a result.
    for sig in (signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    cfg = Config.from_dict(spec["config"])
    # The same file as the master. WatchedFileHandler reopens it when logrotate has moved it away, so the
    # workers need no SIGHUP of their own (they ignore it: see above).
    handler = (
        WatchedLogFileHandler(cfg.daemon.log_file)
        if cfg.daemon.log_file
        else logging.StreamHandler(sys.stderr)
    )
    logging.basicConfig(
        handlers=[handler],
        level=cfg.daemon.log_level.upper(),
        format="%(asctime)s %(levelname)s [worker %(process)d] %(message)s",
    )
    try:
        req, res, ctl = Ring.attach(spec["req"]), Ring.attach(spec["res"]), Control.attach(spec["ctl"])
    except Exception as e:
        log.error("worker %s: cannot attach shared memory: %s", spec.get("index"), e)
        return EXIT_BOOT_ERROR
    if faults.ACTIVE:
        faults.hit("worker.before_ready")
    ctl.set_slot(spec["index"], S_READY, 1, size=4)  # booted: a death from now on is not a boot failure
    Worker(cfg, spec["index"], req, res, ctl).run()
    for obj in (req, res, ctl):
        obj.close()
    return 0

