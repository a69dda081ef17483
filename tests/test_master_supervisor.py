"""The Supervisor on its own: real worker processes on real rings, driven from this process's event loop.

No daemon and no fronts: each test builds the control segment, a dispatcher with its frontier, and a
Supervisor, the way the arbiter composes them, and reaps by polling instead of on SIGCHLD.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shmfetch import Client
from shmfetch.config import Config, DaemonConfig, FetchConfig, PolitenessConfig, RingConfig, SecurityConfig
from shmfetch.dispatch.dispatcher import Dispatcher
from shmfetch.frontier.admission import Frontier
from shmfetch.ipc import names
from shmfetch.ipc.control import S_READY, Control
from shmfetch.job import Job
from shmfetch.master.supervisor import MAX_BOOT_FAILURES, WORKER_ENV, Supervisor
from shmfetch.testing.net import free_port as closed_port  # nothing listens on a free port

from .helpers import (
    REPO,
    Daemon,
    daemon_stats,
    page_text,
    run_cli,
    running_daemon,
    serve_argv,
    wait_for,
    write_config,
)
from .test_master_lifecycle import _in_small_shm, small_shm


def _config(tmp_path: Path, timeout: float = 5.0, hang_grace: float = 5.0) -> Config:
    return Config(
        daemon=DaemonConfig(
            workers=1, threads=2, socket=str(tmp_path / "s.sock"), pidfile=str(tmp_path / "p.pid"),
            hang_grace=hang_grace,
        ),
        ring=RingConfig(request_slots=64, result_slots=64),
        fetch=FetchConfig(timeout=timeout),
        security=SecurityConfig(allow_networks=("127.0.0.1/32",)),
        politeness=PolitenessConfig(per_host=65536),
    )  # fmt: skip


class Inbox:
    """A job's answer, as a client connection would get it."""

    closed = False

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)


class Rig:
    """What the arbiter's ``_compose`` builds around a Supervisor, minus the fronts."""

    def __init__(self, cfg: Config, env: dict[str, str] | None) -> None:
        loop = asyncio.get_running_loop()
        self.boot_loops: list[tuple[int, str]] = []
        self.ctl = Control.create(names.control_name(os.getpid()), cfg.daemon.workers)
        self.d = Dispatcher(
            loop, cfg.daemon.workers, 100, 8, cfg.daemon.threads,
            make_frontier=lambda fail, pump: Frontier(cfg, loop, fail, pump),
            on_busy=lambda: self.sup.arm_watchdog(), on_corrupt=lambda w: self.sup.kill(w),
        )  # fmt: skip
        self.sup = Supervisor(cfg, self.ctl, self.d, self._boot_loop, lambda: None, env=env)

    def _boot_loop(self, index: int, last: str) -> None:
        self.boot_loops.append((index, last))

    def ready(self, index: int = 0) -> bool:
        w = self.d.handles()[index]
        return w is not None and w.alive and bool(self.ctl.slot(index, S_READY, 4))

    async def until(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        """Reap and let the loop run until ``cond()``; fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"no {what} within {timeout}s"
            self.sup.reap()
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.sup.stop(forced=True)
        await self.sup.stop_all(graceful=False, grace=0)
        await self.sup.await_burials()
        self.d.fail_all("shutting_down")
        self.d.frontier.close()
        self.ctl.close()
        self.ctl.unlink()


@contextlib.asynccontextmanager
async def rig(cfg: Config, env: dict[str, str] | None = None) -> AsyncIterator[Rig]:
    r = Rig(cfg, env)
    try:
        yield r
    finally:
        await r.close()


def _shm_exists(name: str) -> bool:
    return os.path.exists(os.path.join(names.SHM_DIR, name.lstrip("/")))


def _broken_lxml_env(tmp_path: Path) -> dict[str, str]:
    """Workers whose import of lxml fails: each exits non-zero before it is ready."""
    broken = tmp_path / "broken"
    (broken / "lxml").mkdir(parents=True)
    (broken / "lxml" / "__init__.py").write_text("raise ImportError('lxml is broken on purpose')\n")
    return dict(WORKER_ENV, PYTHONPATH=f"{broken}{os.pathsep}{REPO}")


def test_a_killed_worker_is_reaped_buried_and_respawned_on_new_rings_and_serves(tmp_path, origin):
    async def scenario() -> None:
        async with rig(_config(tmp_path)) as r:
            r.sup.spawn(0)
            await r.until(r.ready, 30, "ready worker")
            first = r.d.handles()[0]
            os.kill(first.pid, signal.SIGKILL)
            await r.until(lambda: r.ready() and r.d.handles()[0].generation == 2, 30, "respawn")
            assert first.pid not in r.sup.by_pid and not first.alive
            assert not _shm_exists(first.req.name) and not _shm_exists(first.res.name)
            assert (r.sup.restarts[0], r.sup.boot_failures[0]) == (1, 0)
            inbox = Inbox()
            r.d.submit(Job(inbox, 7, origin.url("/page/3")))
            await r.until(lambda: bool(inbox.frames), 30, "answer")
            frame = inbox.frames[0]
            assert frame["ok"] and frame["text"] == page_text(3), frame
            assert r.d.handles()[0].served == 1

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_worker_that_cannot_boot_is_respawned_with_a_growing_delay_then_reported(tmp_path):
    async def scenario() -> None:
        async with rig(_config(tmp_path), env=_broken_lxml_env(tmp_path)) as r:
            spawned: list[float] = []
            r.sup.spawn(0)

            def note_spawns() -> bool:
                while len(spawned) < r.sup.generations[0]:
                    spawned.append(time.monotonic())
                return bool(r.boot_loops)

            await r.until(note_spawns, 60, "boot loop report")
            assert r.boot_loops == [(0, "exit status 1")], r.boot_loops
            assert len(spawned) == MAX_BOOT_FAILURES
            gaps = [b - a for a, b in zip(spawned, spawned[1:], strict=False)]
            # 0.2, 0.4, 0.8, 1.6 s of backoff at least, on top of each attempt's own boot time
            assert sum(gaps) >= 3.0, gaps
            assert gaps[-1] >= 1.6, gaps
            await asyncio.sleep(0.5)
            r.sup.reap()
            assert r.sup.generations[0] == MAX_BOOT_FAILURES, "respawned after the boot loop was reported"
            assert r.d.handles()[0] is None

    asyncio.run(scenario())


def test_a_worker_with_work_that_makes_no_progress_is_killed_and_its_job_redone(tmp_path, origin):
    async def scenario() -> None:
        # hang limit: timeout 0.5 + hang_grace 0.5 = 1 s without a result while holding work
        async with rig(_config(tmp_path, timeout=0.5, hang_grace=0.5)) as r:
            r.sup.spawn(0)
            await r.until(r.ready, 30, "ready worker")
            stuck = r.d.handles()[0]
            os.kill(stuck.pid, signal.SIGSTOP)
            inbox = Inbox()
            t0 = time.monotonic()
            r.d.submit(Job(inbox, 1, origin.url("/page/5")))
            await r.until(lambda: bool(inbox.frames), 30, "answer from the respawned worker")
            assert time.monotonic() - t0 >= 1.0  # not before the hang limit
            assert not stuck.alive and stuck.pid not in r.sup.by_pid
            frame = inbox.frames[0]
            assert frame["ok"] and frame["text"] == page_text(5), frame
            assert r.d.handles()[0].generation == 2
            assert r.sup.boot_failures[0] == 0  # a hang after boot is not a boot failure

    asyncio.run(scenario())


@pytest.mark.slow
def test_the_only_worker_hung_on_the_first_job_is_killed_and_the_job_answered(tmp_path, origin):
    """Through a real daemon: the watchdog must arm on the very first job of a one-worker daemon."""
    with running_daemon(tmp_path, daemon={"workers": 1, "hang_grace": 1}, fetch={"timeout": 1}) as d:
        victim = d.worker_pids()[0]
        os.kill(victim, signal.SIGSTOP)  # stuck as if in C code: consumes nothing, answers nothing
        with Client(d.socket, timeout=30) as c:
            r = c.fetch(origin.url("/page/2"))
        assert r.ok and r.text == page_text(2), r.error
        assert victim not in d.worker_pids()
        rc, _ = d.stop()
    assert rc == 0
    assert "made no progress" in d.stderr


SEGV_AT_BOOT = "worker.before_ready:1::segv"  # every worker crashes in "native code" before it is ready


@pytest.mark.slow
def test_a_worker_killed_by_a_signal_while_booting_is_a_boot_failure(tmp_path):
    async def scenario() -> None:
        async with rig(_config(tmp_path), env=dict(WORKER_ENV, SHMFETCH_FAULT=SEGV_AT_BOOT)) as r:
            r.sup.spawn(0)
            await r.until(lambda: bool(r.boot_loops), 60, "boot loop report")
            assert r.boot_loops == [(0, "killed by SIGSEGV")]
            assert r.sup.generations[0] == MAX_BOOT_FAILURES

    asyncio.run(scenario())


def test_our_own_sigkill_of_a_booting_worker_is_not_a_boot_failure(tmp_path):
    async def scenario() -> None:
        async with rig(_config(tmp_path)) as r:
            r.sup.spawn(0)
            for gen in range(1, MAX_BOOT_FAILURES + 2):
                await r.until(
                    lambda g=gen: (w := r.d.handles()[0]) is not None and w.generation == g, 30, "spawn"
                )
                assert not r.ready(), "the worker was ready already: this tests a booting one"
                r.sup.kill(r.d.handles()[0])
                assert r.sup.boot_failures[0] == 0
            await r.until(r.ready, 30, "a worker left to boot")
            assert r.boot_loops == []

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_daemon_whose_workers_crash_while_booting_stops_with_exit_3(tmp_path):
    """A worker dying of a signal before it is ready (a broken native wheel) must back off and stop the
    daemon, not be respawned at once for ever."""
    cfg = write_config(tmp_path, daemon={"workers": 1})
    d = Daemon(cfg, tmp_path / "shmfetch.sock", wait=False, env=dict(os.environ, SHMFETCH_FAULT=SEGV_AT_BOOT))
    try:
        d.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spawns = d.stderr.count("worker 0 started")
        d.stop()
        raise AssertionError(f"still respawning after {spawns} spawns") from None
    d.stdout, _ = d.proc.communicate(timeout=10)
    assert d.proc.returncode == 3, d.stderr
    assert "worker 0 failed to boot 5 times in a row (last: killed by SIGSEGV)" in d.stderr
    assert d.stderr.count("worker 0 started") == MAX_BOOT_FAILURES
    assert d.last_line() == "downloaded 0 URLs"


def _fill_shm_keeping(shm: Path, keep: str) -> list[int]:
    """Take every free byte of ``shm``, and hold the entries containing ``keep`` open, so that unlinking
    them frees nothing. Returns the descriptors to close."""
    held = [os.open(shm / e, os.O_RDONLY) for e in os.listdir(shm) if keep in e and not e.startswith("sem.")]
    filler = os.open(shm / "filler", os.O_CREAT | os.O_WRONLY, 0o600)
    held.append(filler)
    st = os.statvfs(shm)
    os.posix_fallocate(filler, 0, st.f_bavail * st.f_frsize)
    return held


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.mark.slow
@small_shm
def test_a_respawn_that_finds_no_room_is_retried_while_the_live_workers_serve(tmp_path, origin):
    """A full /dev/shm during one respawn must not stop the daemon: the slot retries at a capped backoff,
    past the boot-failure limit, the other worker serves, and stats, /metrics and the log say so."""
    log_file, port = tmp_path / "daemon.log", closed_port()
    cfg = write_config(
        tmp_path,
        daemon={"workers": 2, "log_file": log_file},
        ring={"request_slots": 64, "result_slots": 64},
        http={"listen": f"127.0.0.1:{port}"},
    )
    d = Daemon(cfg, tmp_path / "shmfetch.sock", argv=_in_small_shm("2m", f"exec {' '.join(serve_argv(cfg))}"))
    held: list[int] = []
    try:
        shm = Path(f"/proc/{d.pid}/root/dev/shm")  # the daemon's private /dev/shm
        victim = daemon_stats(d.socket)["workers"][0]["pid"]
        held = _fill_shm_keeping(shm, ".w0.g1.")
        os.kill(victim, signal.SIGKILL)
        retries = lambda: daemon_stats(d.socket).get("resource_failures", 0) > MAX_BOOT_FAILURES  # noqa: E731
        wait_for(lambda: d.proc.poll() is not None or retries(), 30, "retries past the boot-failure limit")
        assert d.proc.poll() is None, f"the daemon stopped: {d.stderr}"
        w0 = daemon_stats(d.socket)["workers"][0]
        assert not w0["alive"] and "/dev/shm" in w0["respawn_blocked"], w0
        p = run_cli("submit", "--socket", d.socket, "--json", *[origin.url(f"/page/{i}") for i in range(4)])
        assert p.returncode == 0, p.stdout
        assert {json.loads(line)["worker"] for line in p.stdout.splitlines()} == {1}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert _metric(r.read().decode(), "shmfetch_respawn_resource_failures_total") > MAX_BOOT_FAILURES
        assert "serving with 1 live worker(s)" in log_file.read_text()
        for fd in held:
            os.close(fd)
        held = []
        os.unlink(shm / "filler")
        wait_for(lambda: all(w["alive"] for w in daemon_stats(d.socket)["workers"]), 10, "the respawn")
        assert daemon_stats(d.socket)["workers"][0]["respawn_blocked"] is None
    finally:
        for fd in held:
            os.close(fd)
        code, _ = d.stop()
    assert code == 0, d.stderr
