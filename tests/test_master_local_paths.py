"""Local paths another user could prepare: the default socket and pidfile live in a directory only we
can write; a pidfile that is a symlink or another user's file is refused, never followed or truncated;
clients refuse a socket served by another user; and ``stop`` signals only a process proven to hold the
pidfile's lock, never the pid merely written in the file."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shmfetch import config
from shmfetch.api.client import AsyncClient, Client, UntrustedDaemon
from shmfetch.config import DaemonConfig, runtime_dir
from shmfetch.master import pidfile

from .helpers import REPO, Daemon, daemon_stats, run_cli, started_pids, write_config

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def _refused_start(cfg: Path, sock: Path, timeout: float = 30.0) -> Daemon:
    """Start ``serve`` expecting it to refuse; if it runs instead, stop it and fail."""
    d = Daemon(cfg, sock, wait=False)
    deadline = time.monotonic() + timeout
    while d.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if d.proc.poll() is None:
        d.stop()
        raise AssertionError("serve started where it had to refuse")
    d.stdout, _ = d.proc.communicate(timeout=10)
    return d


# -- the pidfile ------------------------------------------------------------------------------------------


def test_a_symlink_at_the_pidfile_path_is_refused_and_its_target_untouched(tmp_path):
    """PidFile.acquire followed a symlink: root's `serve` truncated its target and wrote a pid into it."""
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (tmp_path / "shmfetch.pid").symlink_to(target)
    d = _refused_start(write_config(tmp_path), tmp_path / "shmfetch.sock")
    assert d.proc.returncode == 2, d.stderr
    assert "shmfetch.pid is a symbolic link: refusing to follow it" in d.stderr
    assert "Traceback" not in d.stderr
    assert target.read_text() == "keep me\n"
    assert not (tmp_path / "shmfetch.sock").exists()


@needs_root
def test_a_pidfile_another_user_created_is_refused(tmp_path):
    """Another user's pidfile at the configured path was used (and its owner could rewrite the pid in it,
    or hold its lock so that `serve` refused to start)."""
    path = tmp_path / "shmfetch.pid"
    path.write_text("")
    os.chown(path, NOBODY, NOBODY)
    d = _refused_start(write_config(tmp_path), tmp_path / "shmfetch.sock")
    assert d.proc.returncode == 2, d.stderr
    assert f"belongs to uid {NOBODY}, not to us (uid 0): refusing it" in d.stderr
    assert path.exists() and path.stat().st_uid == NOBODY


def test_the_log_file_is_never_followed_through_a_symlink(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (tmp_path / "shmfetch.log").symlink_to(target)
    handler = None
    with pytest.raises(config.UnsafePath, match="is a symbolic link"):
        handler = config.LogFileHandler(str(tmp_path / "shmfetch.log"))
    assert handler is None and target.read_text() == "keep me\n"


# -- the default directory ---------------------------------------------------------------------------------


def _env(xdg: Path) -> dict[str, str]:
    return {**os.environ, "XDG_RUNTIME_DIR": str(xdg)}


def _config_without_paths(tmp: Path) -> Path:
    cfg = write_config(tmp)
    lines = [ln for ln in cfg.read_text().splitlines() if not ln.startswith(("socket =", "pidfile ="))]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def test_runtime_dir_is_the_users_own(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert runtime_dir() == str(xdg / "shmfetch")
    assert DaemonConfig().socket == str(xdg / "shmfetch" / "shmfetch.sock")
    assert DaemonConfig().pidfile == str(xdg / "shmfetch" / "shmfetch.pid")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    uid = os.geteuid()
    assert runtime_dir() == ("/run/shmfetch" if uid == 0 else f"/tmp/shmfetch-{uid}")
    assert not DaemonConfig().socket.startswith("/tmp/shmfetch.")


@needs_root
def test_an_xdg_runtime_dir_of_another_user_is_not_used(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    os.chown(xdg, NOBODY, NOBODY)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert runtime_dir() == "/run/shmfetch"


def test_serve_with_default_paths_makes_a_private_directory_and_the_clients_find_it(tmp_path):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    cfg = _config_without_paths(tmp_path)
    sock = xdg / "shmfetch" / "shmfetch.sock"
    d = Daemon(cfg, sock, env=_env(xdg))
    try:
        st = (xdg / "shmfetch").stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o700, os.geteuid())
        assert (xdg / "shmfetch" / "shmfetch.pid").read_text().strip() == str(d.pid)
        p = run_cli("stats", "-c", str(cfg), "--json", env=_env(xdg), timeout=30)
        assert p.returncode == 0 and f'"pid": {d.pid}' in p.stdout, p.stderr
    finally:
        code, _ = d.stop()
    assert code == 0, d.stderr


@needs_root
def test_a_default_directory_another_user_made_first_is_refused(tmp_path):
    """Another user could bind the shared default /tmp/shmfetch.sock first, or pre-create and lock the
    pidfile there; the default directory must be ours alone, or `serve` refuses it."""
    xdg = tmp_path / "xdg"
    (xdg / "shmfetch").mkdir(parents=True, mode=0o700)
    xdg.chmod(0o700)
    os.chown(xdg / "shmfetch", NOBODY, NOBODY)
    cfg = _config_without_paths(tmp_path)
    d = Daemon(cfg, xdg / "shmfetch" / "shmfetch.sock", wait=False, env=_env(xdg))
    deadline = time.monotonic() + 30
    while d.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if d.proc.poll() is None:
        d.stop()
        raise AssertionError("serve used a directory another user owns")
    d.stdout, _ = d.proc.communicate(timeout=10)
    assert d.proc.returncode == 2, d.stderr
    assert f"unsafe runtime directory: {xdg}/shmfetch belongs to uid {NOBODY}" in d.stderr
    assert os.listdir(xdg / "shmfetch") == []


def test_a_default_directory_others_may_write_is_refused(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    (xdg / "shmfetch").mkdir(parents=True)
    (xdg / "shmfetch").chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    with pytest.raises(config.UnsafePath, match="has mode 777: others may use it"):
        pidfile.prepare_runtime_dir(str(xdg / "shmfetch" / "shmfetch.pid"))


# -- the socket's peer -------------------------------------------------------------------------------------


def _impostor(path: Path, uid: int) -> tuple[int, int]:
    """A forked child listening on ``path`` as ``uid`` (bound as us, then setuid before listen(): the
    kernel records the listener's credentials at listen). It writes to the returned pipe how many bytes
    clients sent it, after 5 s. Returns (pid, read end of the pipe)."""
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(path))
            os.setgid(uid)
            os.setuid(uid)
            s.listen(8)
            s.settimeout(0.2)
            os.write(ready_w, b"k")
            got, deadline, conns = 0, time.monotonic() + 5, []
            while time.monotonic() < deadline:
                try:
                    c, _ = s.accept()
                    c.settimeout(0.2)
                    conns.append(c)
                except TimeoutError:
                    pass
                for c in conns:
                    try:
                        got += len(c.recv(65536))
                    except (TimeoutError, OSError):
                        pass
            os.write(w, str(got).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"k"
    os.close(ready_r)
    return pid, r


@pytest.mark.slow
@needs_root
def test_clients_refuse_a_socket_served_by_another_user(tmp_path):
    """Another user bound the shared default socket first; root's `submit` sent its URLs to the impostor
    and printed what it forged."""
    path = tmp_path / "impostor.sock"
    pid, r = _impostor(path, NOBODY)
    try:
        with pytest.raises(
            UntrustedDaemon, match=f"served by uid {NOBODY} .* not by you \\(uid 0\\) or root"
        ):
            Client(str(path), timeout=5)
        with pytest.raises(UntrustedDaemon, match=f"served by uid {NOBODY}"):
            asyncio.run(asyncio.wait_for(AsyncClient.connect(str(path)), 5))
        p = run_cli("submit", "--socket", str(path), "http://127.0.0.1:9/secret", timeout=30)
        assert p.returncode == 2
        assert f"is served by uid {NOBODY}" in p.stderr and "refusing to talk to it" in p.stderr
        assert p.stdout == ""
    finally:
        _, status = os.waitpid(pid, 0)
        sent = int(os.read(r, 32) or b"-1")
        os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sent == 0, f"the impostor received {sent} bytes"


@pytest.mark.slow
@needs_root
def test_clients_accept_a_service_user_whose_directory_only_it_can_write(tmp_path):
    """The shipped systemd unit shares a service user's 0750 RuntimeDirectory with a group of clients:
    nobody but that user (or root) can have put the socket there, so its daemon is trusted."""
    service = tmp_path / "run"
    service.mkdir(mode=0o750)
    os.chown(service, NOBODY, NOBODY)
    pid, r = _impostor(service / "shmfetch.sock", NOBODY)
    try:
        Client(str(service / "shmfetch.sock"), timeout=5).close()
        service.chmod(0o770)  # now others (its group) may write there too: no longer proof
        with pytest.raises(UntrustedDaemon):
            Client(str(service / "shmfetch.sock"), timeout=5)
    finally:
        os.waitpid(pid, 0)
        os.close(r)


def test_clients_accept_their_own_users_daemon(tmp_path):
    d = Daemon(write_config(tmp_path), tmp_path / "shmfetch.sock")
    try:
        assert daemon_stats(d.socket)["pid"] == d.pid
    finally:
        assert d.stop()[0] == 0


# -- stop signals only the proven holder -------------------------------------------------------------------

_STOP_IN_NAMESPACE = """
import json, os, subprocess, sys, time
decoy = subprocess.Popen(["sleep", "30"])  # pid 2 here: the pid the pidfile names
with open(sys.argv[2], "w") as fh:
    fh.write(f"{decoy.pid}\\n")
stop = subprocess.run([sys.executable, "-m", "shmfetch", "stop", "-c", sys.argv[1]],
                      capture_output=True, text=True, timeout=60)
time.sleep(0.3)
alive = decoy.poll() is None
decoy.kill()
decoy.wait()
print(json.dumps({"rc": stop.returncode, "err": stop.stderr, "decoy": decoy.pid, "alive": alive}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for unshare --pid")
def test_stop_never_signals_the_pid_written_in_a_pidfile_whose_holder_it_cannot_see(tmp_path):
    """When /proc/locks did not show the lock's holder (a holder in another pid namespace, as here), `stop`
    signalled the pid written in the file: with a shared /tmp, any process at all."""
    cfg = write_config(tmp_path)
    path = tmp_path / "shmfetch.pid"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o644)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    started_pids.add(holder.pid)
    try:
        assert holder.stdout.readline() == "locked\n"  # bounded: the child exits within 60 s
        p = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable, "-c",
             _STOP_IN_NAMESPACE, str(cfg), str(path)],
            capture_output=True, text=True, timeout=90, cwd=REPO,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out["alive"], f"stop signalled pid {out['decoy']}, which only the file named: {out['err']}"
        assert out["rc"] == 2 and "cannot tell which process holds the lock" in out["err"], out
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait(timeout=10)
