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

from ..config import Config
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
        fetcher = Fetcher(self.cfg.fetch, self.cfg.security, answer_pauses=True)  # the master pauses hosts
        wake = threading.Lock()
        wake.acquire()  # held: _take blocks on it until another thread hands the ring over
        try:
            while (msg := self._take(wake)) is not None:
                self._serve(fetcher, msg)
        finally:
            fetcher.close()

    def _serve(self, fetcher: Fetcher, msg: Any) -> None:
        t0 = time.perf_counter()
        try:
            ticket, url = msg[0], msg[1]
            # The master checked the options (options.check); the config fills in the rest. A request
            # without any (nil) uses the Fetcher's defaults, built once.
            given = msg[2] if len(msg) > 2 else None
            opts = effective(given, self.cfg.fetch) if isinstance(given, dict) else None
        except (TypeError, IndexError, KeyError, AttributeError):
            log.error("worker %d: malformed request record %r", self.index, msg)
            return
        if faults.ACTIVE:
            faults.hit("worker.after_take")
        self._set_busy(+1)
        try:
            out = fetcher.fetch(url, opts) if isinstance(url, str) else Outcome(False, error="invalid_url")
        except Exception as e:  # Fetcher.fetch promises not to raise; a bug must still answer the client
            log.exception("worker %d: fetch of %r raised", self.index, url)
            out = Outcome(False, error="internal_error", message=f"{type(e).__name__}: {e}")
        payload = pack_result(ticket, out)
        out_ms = (time.perf_counter() - t0) * 1000.0
        with self._put_lock:
            self.res.put(payload)  # commit: from here on the master owns the result
        if faults.ACTIVE:
            faults.hit("worker.after_commit")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: fetched %s in %.1f ms", url, "ok" if out.ok else out.error, out_ms)
        if out.ok:
            # After the commit, never before: see docs/RING.md, "why it stays exact when a worker dies".
            self.ctl.increment(self.index)
        self._set_busy(-1)

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
        logging.handlers.WatchedFileHandler(cfg.daemon.log_file)
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

