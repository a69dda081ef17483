"""The master's life, start to stop: ownership by locks and live pids, never by names; a start that
fails leaves nothing; a full /dev/shm is an error, not a SIGBUS; respawn survives any failure.

The full-/dev/shm tests run the daemon in a private mount namespace over a small tmpfs (``unshare --mount``,
root only), so the machine's /dev/shm is never filled; they skip, saying why, where that is not allowed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shmfetch import Client
from shmfetch.ipc import names
from shmfetch.master import pidfile

from .helpers import (
    REPO,
    Daemon,
    daemon_stats,
    run_cli,
    running_daemon,
    serve_argv,
    started_pids,
    wait_for,
    write_config,
)  # fmt: skip

# -- ownership: live pids and locks, not names ------------------------------------------------------


@contextlib.contextmanager
def _live_process(*argv: str, **popen):
    proc = subprocess.Popen(list(argv) or ["sleep", "60"], stdin=subprocess.DEVNULL, **popen)
    started_pids.add(proc.pid)  # the leftover check then watches the objects we name after it
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=10)
    started_pids.add(proc.pid)
    return proc.pid


def _shm(entry: str) -> Path:
    return Path(names.SHM_DIR) / entry


@pytest.mark.slow
def test_serve_leaves_live_masters_objects_alone_and_removes_dead_ones(tmp_path):
    """`serve` once deleted a live process's objects. Liveness is the control segment's life lock
    (stale.py), whatever pid a name carries: a live holder keeps its objects, a dead one's are removed."""
    dead = _dead_pid()
    with _live_process(
        sys.executable,
        "-c",
        _HOLD_CONTROL,
        names.control_name(os.getpid()),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    ) as live:
        live_ctl = live.stdout.readline().strip()  # bounded: the child exits within 60 s
        stale_ctl = names.control_name(dead)
        mine = _shm(names.ring_name(live_ctl, 0, 1, "test0").lstrip("/"))
        stale_objects = [
            _shm(stale_ctl.lstrip("/")),
            _shm(names.ring_name(stale_ctl, 0, 1, "test0").lstrip("/")),
        ]
        try:
            mine.write_bytes(b"x")
            stale_objects[0].write_bytes(
                b"SHMFCTRL"
            )  # a header written: its master got its life lock, then died
            stale_objects[1].write_bytes(b"x")
            cfg = write_config(tmp_path)
            d = Daemon(cfg, tmp_path / "shmfetch.sock")
            code, _ = d.stop()
            assert code == 0
            assert mine.exists() and _shm(live_ctl.lstrip("/")).exists(), (
                "a live master's objects were removed"
            )
            assert not any(p.exists() for p in stale_objects), "the objects of a dead master were kept"
        finally:
            for p in (mine, _shm(live_ctl.lstrip("/")), *stale_objects):
                p.unlink(missing_ok=True)


# A live master, reduced to its control segment: create it (taking its life lock), print its name, live on.
_HOLD_CONTROL = (
    "import sys, time\n"
    "from shmfetch.ipc.control import Control\n"
    "c = Control.create(sys.argv[1], 1)\n"
    "print(c.name, flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.slow
def test_a_dead_masters_objects_named_with_the_new_masters_own_pid_are_removed(tmp_path):
    """Pids are reused (containers). Objects carrying the starting master's own pid, left by an
    earlier process with that pid, must neither stop it nor stay; a fresh instance token keeps the names
    apart, and the life lock nobody holds marks them stale."""
    cfg = write_config(tmp_path)
    # `exec` keeps the shell's pid, so the objects are named with the pid the daemon will have.
    tok = "0123456789abcdef"
    argv = [
        "sh",
        "-c",
        f"printf SHMFCTRL > {names.SHM_DIR}/shmfetch.$$.{tok}.ctl; "
        f'touch {names.SHM_DIR}/sem.shmfetch.$$.{tok}.w0.g1.{tok}.req.free; exec "$@"',
    ]
    d = Daemon(cfg, tmp_path / "shmfetch.sock", argv=[*argv, "sh", *serve_argv(cfg)])
    code, out = d.stop()
    assert code == 0, d.stderr
    assert d.last_line() == "downloaded 0 URLs"
    assert names.owned_by(d.pid) == []


def test_stop_signals_only_the_process_holding_the_pidfile_lock(tmp_path):
    """Regression: `stop` signalled whatever pid the pidfile named if its command line said "shmfetch"."""
    cfg = write_config(tmp_path)
    with _live_process(sys.executable, "-c", "import time; time.sleep(60)", "shmfetch", "serve") as impostor:
        (tmp_path / "shmfetch.pid").write_text(f"{impostor.pid}\n")  # a recycled pid after a crash
        p = run_cli("stop", "-c", str(cfg), timeout=30)
        assert p.returncode == 2 and "no running daemon" in p.stderr
        time.sleep(0.2)
        assert impostor.poll() is None, "stop signalled a process that does not hold the pidfile lock"


def test_refusal_names_the_lock_holder_before_it_has_written_its_pid(tmp_path):
    """CI race: a second start between the first's lock and its pid write named nobody, or a dead owner."""
    path = tmp_path / "shmfetch.pid"
    path.write_text("4194303\n")  # what a crashed owner left behind
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "sys.stdout.write('locked\\n'); sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    started_pids.add(holder.pid)
    try:
        assert holder.stdout.readline() == "locked\n"  # bounded: the child exits within 60 s
        with pytest.raises(pidfile.AlreadyRunning) as e:
            pidfile.PidFile.acquire(str(path))
        assert e.value.pid == holder.pid
        assert f"pid {holder.pid}" in str(e.value)
        assert pidfile.running_pid(str(path)) == holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=10)


# -- one daemon per config and per socket ---------------------------------------------------------------


def _race(configs: list[Path], sock: Path) -> tuple[Daemon, Daemon]:
    """Start one daemon per config at the same instant; return (the one that runs, the one refused)."""
    ds = [Daemon(c, sock, wait=False) for c in configs]
    try:
        loser = None
        deadline = time.monotonic() + 30
        while loser is None and time.monotonic() < deadline:
            loser = next((d for d in ds if d.proc.poll() is not None), None)
            time.sleep(0.05)
        assert loser is not None, "both daemons are still running"
        winner = next(d for d in ds if d is not loser)
        winner.wait_ready()
        loser.stdout, _ = loser.proc.communicate(timeout=10)
        return winner, loser
    except BaseException:
        for d in ds:
            if d.proc.poll() is None:
                d.kill()
        raise


def _assert_refused_naming(loser: Daemon, winner: Daemon) -> None:
    assert loser.proc.returncode == 2, loser.stderr
    assert f"pid {winner.pid}" in loser.stderr, loser.stderr
    assert "Traceback" not in loser.stderr
    assert names.owned_by(loser.pid) == []


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_two_serve_on_one_config_exactly_one_runs(tmp_path, attempt):
    """Regression: two `serve` on one config could both run (the socket silently replaced)."""
    cfg = write_config(tmp_path)
    winner, loser = _race([cfg, cfg], tmp_path / "shmfetch.sock")
    try:
        _assert_refused_naming(loser, winner)
        assert daemon_stats(winner.socket)["pid"] == winner.pid
        assert (tmp_path / "shmfetch.pid").read_text().strip() == str(winner.pid)
    finally:
        code, _ = winner.stop()
    assert code == 0


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_two_configs_sharing_one_socket_exactly_one_runs(tmp_path, attempt):
    """The pidfile lock cannot help when two configs name one socket; the bind must."""
    sock = tmp_path / "shared.sock"
    cfgs = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        cfgs.append(write_config(d, daemon={"socket": sock, "pidfile": d / "shmfetch.pid"}))
    winner, loser = _race(cfgs, sock)
    try:
        _assert_refused_naming(loser, winner)
        assert daemon_stats(str(sock))["pid"] == winner.pid
    finally:
        code, _ = winner.stop()
    assert code == 0
    assert not sock.exists()


def test_a_stale_socket_nobody_listens_on_is_replaced(tmp_path):
    import socket

    path = tmp_path / "shmfetch.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens: a crashed daemon's socket
    d = Daemon(write_config(tmp_path), path)
    assert daemon_stats(str(path))["pid"] == d.pid
    assert d.stop()[0] == 0


def test_failed_start_socket_in_a_missing_directory_exits_2_and_leaves_nothing(tmp_path):
    """Regression: a start that failed exited 1 with a traceback, and left the control segment and its lock
    in /dev/shm."""
    cfg = write_config(tmp_path, daemon={"socket": tmp_path / "missing" / "s.sock"})
    p = run_cli("serve", "-c", str(cfg), timeout=30)
    assert p.returncode == 2, p.stderr
    assert "cannot listen on" in p.stderr and "missing/s.sock" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "shmfetch.pid").exists()
    pid = max(started_pids)  # run_cli registered it; the leftover check looks at its objects too
    assert names.owned_by(pid) == []


# -- a full /dev/shm, in a private mount namespace ----------------------------------------------------


def _small_shm_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a private mount namespace with a small tmpfs on /dev/shm"
    try:
        p = subprocess.run(
            ["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /dev/shm"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare --mount is not usable here: {e}"
    if p.returncode != 0:
        return f"cannot mount a tmpfs in a private mount namespace here: {p.stderr.strip()}"
    return None


small_shm = pytest.mark.skipif(bool(_small_shm_reason()), reason=_small_shm_reason() or "")


def _in_small_shm(size: str, command: str) -> list[str]:
    """``command`` (sh) in a private mount namespace whose /dev/shm is a ``size`` tmpfs."""
    return ["unshare", "--mount", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs /dev/shm && {command}"]


@small_shm
@pytest.mark.parametrize(
    "workers, ring",
    [
        (1, {}),  # the default 4 MiB result ring on a 1 MiB /dev/shm: SIGBUS at its first result before
        (4, {"request_slots": 64, "result_slots": 64}),  # three workers fit; the fourth does not
    ],
)
def test_full_dev_shm_is_exit_2_with_the_figures_and_leaves_nothing(tmp_path, workers, ring):
    """Regression: rings were created sparse, and the first write past the tmpfs's space was a SIGBUS."""
    cfg = write_config(tmp_path, daemon={"workers": workers}, ring=ring)
    serve = " ".join(serve_argv(cfg))
    argv = _in_small_shm("1m", f"{serve}; rc=$?; echo leftover: $(ls -A /dev/shm); exit $rc")
    with subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
            raise AssertionError("serve did not exit on a full /dev/shm") from None
    assert proc.returncode == 2, err
    m = re.search(r"needs (\d+) bytes, (\d+) bytes are free in /dev/shm", err)
    assert m, err
    assert int(m.group(1)) > int(m.group(2))
    assert "Traceback" not in err
    assert out.strip().splitlines()[-1] == "leftover:", out
    assert "downloaded" not in out


@pytest.mark.slow
def test_a_worker_dying_of_sigbus_is_a_boot_failure(tmp_path):
    """Regression: SIGBUS deaths (what a full /dev/shm gives) were respawned forever, without delay."""
    cfg = write_config(tmp_path, daemon={"workers": 1})
    d = Daemon(cfg, tmp_path / "shmfetch.sock")
    try:
        killed: set[int] = set()
        deadline = time.monotonic() + 30
        while d.proc.poll() is None and time.monotonic() < deadline:
            for pid in d.worker_pids():
                if pid not in killed:
                    killed.add(pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGBUS)
            time.sleep(0.02)
        assert d.proc.poll() is not None, f"still respawning after {len(killed)} SIGBUS deaths"
        d.stdout, _ = d.proc.communicate(timeout=10)
    finally:
        if d.proc.poll() is None:
            d.kill()
    assert d.proc.returncode == 3, d.stderr
    assert "failed to boot 5 times in a row (last: killed by SIGBUS)" in d.stderr
    assert len(killed) == 5


@pytest.mark.slow
@small_shm
def test_respawn_survives_a_full_dev_shm_and_leaves_nothing_of_the_failed_attempt(tmp_path, origin):
    """Regression: a failure creating the new rings escaped _respawn (only OSError was caught) and leaked
    what had been created; the slot was never respawned."""
    log_file = tmp_path / "daemon.log"
    cfg = write_config(
        tmp_path,
        daemon={"workers": 2, "log_file": log_file},
        ring={"request_slots": 64, "result_slots": 64},
    )
    serve = " ".join(serve_argv(cfg))
    d = Daemon(cfg, tmp_path / "shmfetch.sock", argv=_in_small_shm("2m", f"exec {serve}"))
    held: list[int] = []
    try:
        shm = Path(f"/proc/{d.pid}/root/dev/shm")  # the daemon's private /dev/shm
        index = 0
        victim = daemon_stats(d.socket)["workers"][index]["pid"]
        # Hold the victim's rings open, so that unlinking them frees nothing, and take every free byte.
        for entry in os.listdir(shm):
            if f".w{index}.g1." in entry and not entry.startswith("sem."):
                held.append(os.open(shm / entry, os.O_RDONLY))
        filler = os.open(shm / "filler", os.O_CREAT | os.O_WRONLY, 0o600)
        held.append(filler)
        st = os.statvfs(shm)
        os.posix_fallocate(filler, 0, st.f_bavail * st.f_frsize)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: "cannot respawn worker" in log_file.read_text(), 10, "a failed respawn")
        assert d.proc.poll() is None, "the master died instead of retrying"
        attempts = [e for e in os.listdir(shm) if f".w{index}." in e and ".g1." not in e]
        assert attempts == [], f"a failed respawn left {attempts}"
        for fd in held:
            os.close(fd)
        held.clear()
        os.unlink(shm / "filler")
        wait_for(lambda: all(w["alive"] for w in daemon_stats(d.socket)["workers"]), 10, "the respawn")
        p = run_cli("submit", "--socket", d.socket, "--json", *[origin.url(f"/page/{i}") for i in range(6)])
        assert p.returncode == 0, p.stdout
        assert {json.loads(line)["worker"] for line in p.stdout.splitlines()} == {0, 1}
    finally:
        for fd in held:
            os.close(fd)
        code, _ = d.stop()
    assert code == 0, d.stderr
    assert "cannot respawn worker" in log_file.read_text()


# -- the worker's command line ----------------------------------------------------------------------------


@pytest.mark.slow
def test_worker_command_line_names_the_worker_not_its_config(tmp_path):
    """Regression: the worker's command line carried the whole config as JSON."""
    cfg = write_config(tmp_path, daemon={"workers": 2})
    d = Daemon(cfg, tmp_path / "shmfetch.sock")
    try:
        by_index = {w["index"]: w["pid"] for w in daemon_stats(d.socket)["workers"]}
        for index, pid in by_index.items():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            assert cmdline[1:] == [b"-m", b"shmfetch.worker", str(index).encode()], cmdline
            comm = Path(f"/proc/{pid}/comm")
            wait_for(
                lambda c=comm, i=index: c.read_text().strip() == f"shmfetch-w{i}", 10, "the worker's name"
            )
    finally:
        code, _ = d.stop()
    assert code == 0


# -- a stderr nobody reads --------------------------------------------------------------------------------


def test_a_stderr_nobody_reads_does_not_stop_the_master(tmp_path):
    """Regression: the master wrote its log on the event loop's thread, so once an unread stderr pipe was
    full (64 KiB) the loop blocked in ``write``: clients, ``stats`` and signals all stopped (found by a
    kill storm whose test harness did not read the pipe). 1 500 bad clients log ~160 KiB here."""
    cfg = write_config(tmp_path)
    d = Daemon(cfg, tmp_path / "shmfetch.sock", stderr_pipe=True)
    try:
        for _ in range(1500):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)  # the old master stops answering after ~600 of these
                s.connect(d.socket)
                s.sendall(b"\xff\xff\xff\xff")  # a frame longer than max_frame_bytes: logged, then closed
                while s.recv(4096):
                    pass
        with Client(d.socket, timeout=2) as c:
            assert c.stats()["pid"] == d.pid
    finally:
        rc, out = d.stop(timeout=20)  # communicate() reads the pipe now, so the queued lines drain
    assert rc == 0 and out.strip().endswith("downloaded 0 URLs")


# -- a whole life: signals that stop it, the objects it owns, a config it refuses -------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_like_sigusr1(tmp_path, origin, sig):
    with running_daemon(tmp_path) as d:
        with Client(d.socket) as c:
            assert c.fetch(origin.url("/page/1")).ok
        rc, out = d.stop(sig)
    assert rc == 0 and d.last_line() == "downloaded 1 URLs"


def test_objects_are_private_named_for_the_master_and_all_removed(tmp_path, origin):
    with running_daemon(tmp_path) as d:
        mode = os.stat(d.socket).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        owned = names.owned_by(d.pid)
        # control segment (its lock is an fcntl lock on it), and per worker 2 rings x (segment + 2 semaphores)
        assert len(owned) == 1 + 2 * 2 * 3, owned
        for e in owned:
            assert stat.S_IMODE(os.stat(os.path.join("/dev/shm", e)).st_mode) == 0o600
        kids = d.worker_pids()
        assert len(kids) == 2
        assert open(tmp_path / "shmfetch.pid").read().strip() == str(d.pid)
        d.stop()
    assert names.owned_by(d.pid) == []
    assert not os.path.exists(d.socket) and not os.path.exists(tmp_path / "shmfetch.pid")
    for k in kids:  # reaped, not zombies: the pid is gone
        assert not os.path.exists(f"/proc/{k}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "section,key,value",
    [
        ("daemon", "workers", "zero"),
        ("daemon", "workers", "0"),
        ("daemon", "threads", "-1"),
        ("fetch", "timeout", "soon"),
        ("ring", "request_slots", "1000"),
        ("daemon", "log_level", "loud"),
        ("daemon", "wrokers", "2"),
        ("security", "allow_networks", "127.0.0.300/8"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path, section, key, value):
    cfg = write_config(tmp_path, **{section: {key: value}})
    p = run_cli("serve", "-c", str(cfg), timeout=30)
    assert p.returncode == 2
    assert key in p.stderr and value in p.stderr


# -- stop and logging ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stop_command_stops_the_daemon_and_prints_the_count(tmp_path, origin):
    with running_daemon(tmp_path) as d:
        with Client(d.socket) as c:
            assert all(r.ok for r in c.fetch_many([origin.url(f"/page/{i}") for i in range(3)]))
            assert not c.fetch(origin.url("/status/404")).ok
        p = run_cli("stop", "-c", str(d.config))
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "downloaded 3 URLs"
        d.proc.wait(timeout=20)
        assert d.proc.returncode == 0
        d.stdout, _ = d.proc.communicate(timeout=30)
        assert d.last_line() == "downloaded 3 URLs"
    assert not os.path.exists(tmp_path / "shmfetch.pid") and not os.path.exists(d.socket)
    p = run_cli("stop", "-c", str(d.config))
    assert p.returncode == 2 and "no running daemon" in p.stderr


def test_stop_refuses_a_stale_pidfile_naming_another_program(tmp_path):
    cfg = write_config(tmp_path)
    other = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "shmfetch.pid").write_text(f"{other.pid}\n")  # a recycled pid, as after a crash
        p = run_cli("stop", "-c", str(cfg))
        assert p.returncode == 2 and "no running daemon" in p.stderr
        assert other.poll() is None  # not signalled
    finally:
        other.kill()
        other.wait(10)


@pytest.mark.slow
def test_log_file_reopens_on_sighup_and_logs_workers_and_requests(tmp_path, origin):
    log = tmp_path / "shmfetch.log"
    with running_daemon(tmp_path, daemon={"log_file": log, "log_level": "debug"}) as d:
        wait_for(lambda: "listening on" in log.read_text(), 5, "the start line")
        first = log.read_text()
        assert "worker 0 started: pid" in first and "worker 1 started: pid" in first
        log.rename(tmp_path / "shmfetch.log.1")  # what logrotate does
        os.kill(d.pid, signal.SIGHUP)
        wait_for(lambda: log.exists() and "log file reopened" in log.read_text(), 5, "a new log file")

        url = origin.url("/page/9")
        with Client(d.socket) as c:
            assert c.fetch(url).ok
        # per-request line at debug level: url, worker, ok/error, elapsed
        wait_for(lambda: f"{url}: worker " in log.read_text(), 5, "the request line")
        line = next(x for x in log.read_text().splitlines() if f"{url}: worker " in x)
        assert " ok in " in line and line.endswith(" ms") and "DEBUG" in line
        # the workers write to the same file, and follow it to the new one after the rotation
        wait_for(
            lambda: "[worker " in log.read_text() and f"{url}: fetched ok in " in log.read_text(),
            5,
            "a worker line",
        )

        victim = d.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: "(respawned, restart 1)" in log.read_text(), 10, "the respawn line")
        text = log.read_text()
        assert f"(pid {victim}) died: killed by SIGKILL" in text
        rc, _ = d.stop()
    assert rc == 0
    text = log.read_text()
    assert "exited: exit status 0" in text and "draining" in text
    assert "draining" not in (tmp_path / "shmfetch.log.1").read_text()


@pytest.mark.slow
def test_log_level_info_has_no_request_lines(tmp_path, origin):
    log = tmp_path / "shmfetch.log"
    with running_daemon(tmp_path, daemon={"log_file": log}) as d:
        with Client(d.socket) as c:
            assert c.fetch(origin.url("/page/2")).ok
        d.stop()
    assert "listening on" in log.read_text() and "/page/2" not in log.read_text()
