"""Whose shared objects are whose: liveness by the control segment's life lock (released by the kernel
whatever the death, in any pid namespace), never by a pid; names nobody can guess in advance, and a name
someone took first drawn again."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import posix_ipc
import pytest

from shmfetch import Client
from shmfetch.ipc import names, stale
from shmfetch.ipc.control import Control
from shmfetch.ipc.ring import Ring

from .helpers import Daemon, fork_child, page_text, serve_argv, started_pids, wait_for, write_config

SHM = Path(names.SHM_DIR)
NOBODY = 65534




def _hold_control(name: str, ready_fd: int) -> None:
    """Child: a master's life, reduced to its control segment: create it, say so, then live on."""
    ctl = Control.create(name, 1)  # kept: its mapping's own descriptor would drop the lock when freed
    os.write(ready_fd, b"k")
    time.sleep(60)
    ctl.close()


def _instance_objects(control: str) -> list[Path]:
    """A control segment, a ring's segment and its two semaphores, all under the control's instance."""
    base = control.removesuffix("ctl").lstrip("/")
    return [SHM / control.lstrip("/"), SHM / f"{base}w0.g1.x.req", SHM / f"sem.{base}w0.g1.x.req.free"]


# -- stale removal proves death by the life lock ---------------------------------------------------------


def test_a_live_masters_objects_are_kept_and_a_dead_ones_removed_whatever_their_pids():
    """Removal judged the pid in a name: a live master in another pid namespace (same pid as ours, or no
    pid of ours at all) lost its objects. Now only the kernel's lock decides."""
    r, w = os.pipe()
    live_name, dead_name = names.control_name(os.getpid()), names.control_name(os.getpid())
    holders = [fork_child(_hold_control, live_name, w), fork_child(_hold_control, dead_name, w)]
    try:
        assert os.read(r, 1) + os.read(r, 1) == b"kk"
        os.kill(holders[1], signal.SIGKILL)
        os.waitpid(holders[1], 0)  # its lock is gone with it; its pid is still in no name of ours
        for p in _instance_objects(live_name)[1:] + _instance_objects(dead_name)[1:]:
            p.write_bytes(b"x")
        removed = stale.remove_stale()
        assert all(p.exists() for p in _instance_objects(live_name)), "a live master's objects were removed"
        assert not any(p.exists() for p in _instance_objects(dead_name)), "a dead master's objects were kept"
        assert sorted(p.name for p in _instance_objects(dead_name)) == sorted(
            e for e in removed if e in {p.name for p in _instance_objects(dead_name)}
        )
    finally:
        for pid in holders:
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        for p in _instance_objects(live_name) + _instance_objects(dead_name):
            p.unlink(missing_ok=True)
        os.close(r)
        os.close(w)


def test_rings_whose_control_segment_is_gone_are_stale_and_a_young_unwritten_control_is_not():
    gone, young = names.control_name(os.getpid()), names.control_name(os.getpid())
    orphans = _instance_objects(gone)[1:]
    starting = _instance_objects(young)
    try:
        for p in orphans + starting:
            p.write_bytes(b"\0" * 64)  # the control of `young`: created, header not yet written
        stale.remove_stale()
        assert not any(p.exists() for p in orphans), "rings without a control segment were kept"
        assert all(p.exists() for p in starting), "a master between its create and its lock lost its objects"
    finally:
        for p in orphans + starting:
            p.unlink(missing_ok=True)


# -- names nobody can take first -------------------------------------------------------------------------


def test_names_carry_fresh_tokens_under_their_control_segments_instance():
    ctl = names.control_name(123)
    assert re.fullmatch(r"/shmfetch\.123\.[0-9a-f]{16}\.ctl", ctl)
    a, b = names.ring_name(ctl, 0, 2, "req"), names.ring_name(ctl, 0, 2, "req")
    assert a != b, "a ring's name must not be predictable from an earlier one"
    assert a.startswith(ctl.removesuffix("ctl")) and a.endswith(".req")
    assert names.instance_prefix(a.lstrip("/")) == names.instance_prefix(f"sem.{a.lstrip('/')}.free")


def test_a_name_that_exists_is_drawn_again_and_is_no_failure():
    taken = [names.ring_name(names.control_name(os.getpid()), 0, g, "req") for g in (1, 2)]
    # One taken as a segment, one by a semaphore of the ring-to-be: both make a create fail as "exists".
    shm = posix_ipc.SharedMemory(taken[0], posix_ipc.O_CREX, size=64)
    sem = posix_ipc.Semaphore(taken[1] + ".fill", posix_ipc.O_CREX)
    drawn = iter([*taken, names.ring_name(names.control_name(os.getpid()), 0, 3, "req")])
    ring = None
    try:
        ring = Ring.create_fresh(lambda: next(drawn), 8, 64)
        assert ring.name not in taken
        assert os.path.exists(f"/dev/shm{taken[0]}") and not os.path.exists(f"/dev/shm{taken[1]}")
    finally:
        if ring is not None:
            ring.close()
            ring.unlink()
        shm.close_fd()
        shm.unlink()
        sem.unlink()
        sem.close()


def _create_as(uid: int, paths: list[Path]) -> None:
    """Create ``paths`` as another user would (O_EXCL, mode 0600, owned by ``uid``), in a forked child."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.setgid(uid)
            os.setuid(uid)
            for p in paths:
                os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "could not create the squatter's files"


def _guesses(entries: list[str]) -> list[Path]:
    """Every name of worker 0's next six generations that can be derived from what /dev/shm shows now:
    the same names with the generation bumped, and the pid-only names of the earlier naming."""
    out = set()
    for e in entries:
        m = re.match(r"^(sem\.)?(shmfetch\.(\d+)\.(?:[0-9a-f]{16}\.)?)w0\.g(\d+)\.(.*)$", e)
        if not m:
            continue
        sem, base, pid, g, rest = m.groups()
        for nxt in range(int(g) + 1, int(g) + 7):
            out.add(f"{sem or ''}{base}w0.g{nxt}.{rest}")
            for kind in ("req", "res"):
                old = f"shmfetch.{pid}.w0.g{nxt}.{kind}"
                out.update({old, f"sem.{old}.free", f"sem.{old}.fill"})
    return [SHM / n for n in sorted(out) if not (SHM / n).exists()]


def _worker0(sock: str) -> dict:
    with Client(sock, timeout=10) as c:
        return c.stats()["workers"][0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files as another user")
def test_respawns_go_on_when_another_user_took_every_name_it_could_derive(tmp_path, origin):
    """Another user pre-created the names of generations 2-7 of worker 0's rings; every respawn failed
    with 'already exists', counted as a boot failure, and the daemon exited 3."""
    d = Daemon(write_config(tmp_path, daemon={"workers": 1}), tmp_path / "shmfetch.sock")
    squatted: list[Path] = []
    try:
        squatted = _guesses(names.owned_by(d.pid))
        assert len(squatted) >= 36
        _create_as(NOBODY, squatted)
        for gen in range(2, 7):
            os.kill(_worker0(d.socket)["pid"], signal.SIGKILL)
            wait_for(
                lambda gen=gen: (w := _worker0(d.socket))["generation"] == gen and w["ready"],
                30,
                f"worker 0 generation {gen} to be ready",
            )
        with Client(d.socket, timeout=30) as c:
            r = c.fetch(origin.url("/page/3"))
        assert r.ok and r.text == page_text(3)
        code, _ = d.stop()
        assert code == 0, d.stderr
        assert d.last_line() == "downloaded 1 URLs"
        assert "failed to boot" not in d.stderr and "cannot respawn" not in d.stderr
    finally:
        if d.proc.poll() is None:
            d.kill()
        for p in squatted:
            p.unlink(missing_ok=True)


# -- two daemons in separate pid namespaces, one /dev/shm -------------------------------------------------

UNSHARE_PID = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def _pid_namespace_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for unshare --pid"
    try:
        p = subprocess.run([*UNSHARE_PID, "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare is not usable here: {e}"
    return None if p.returncode == 0 else f"cannot make a pid namespace here: {p.stderr.strip()}"


class _Contained:
    """``shmfetch serve`` as pid 1 of a new pid namespace (``unshare --pid --fork --mount-proc``), sharing
    this machine's /dev/shm. ``master`` and ``workers()`` are pids as seen from here."""

    def __init__(self, tmp: Path, origin):
        self.origin = origin
        tmp.mkdir()
        cfg = write_config(tmp, daemon={"workers": 2})
        self.sock = str(tmp / "shmfetch.sock")
        self.outer = Daemon(cfg, tmp / "shmfetch.sock", wait=False, argv=[*UNSHARE_PID, *serve_argv(cfg)])
        self.master = wait_for(lambda: _children(self.outer.pid), 20, "unshare to start the daemon")[0]
        started_pids.add(self.master)
        wait_for(self.ready, 30, "the contained daemon's workers to be ready")
        CONTAINED_PREFIXES.append(self.instance_prefix())

    def instance_prefix(self) -> str:
        """``shmfetch.1.TOKEN.``: the name prefix of every object of this daemon (its control segment, and
        its rings, named from it), read from the master's own mappings. Another run's pid-1 daemons share
        the ``shmfetch.1.`` part, never the token."""
        with open(f"/proc/{self.master}/maps") as fh:
            for line in fh:
                path = line.split()[-1]
                if path.startswith(f"{SHM}/") and path.endswith(".ctl"):
                    prefix = names.instance_prefix(path[len(str(SHM)) + 1 :])
                    if prefix:
                        return prefix
        raise AssertionError("the contained master maps no control segment")

    def stats(self) -> dict:
        with Client(self.sock, timeout=10) as c:
            return c.stats()

    def ready(self) -> bool:
        if self.outer.proc.poll() is not None:
            raise AssertionError(f"the contained daemon exited: {self.outer.stderr}")
        try:
            st = self.stats()
        except OSError:
            return False
        return all(w["alive"] and w["ready"] for w in st["workers"])

    def workers(self) -> list[int]:
        return _children(self.master)

    def fetch(self, pages: range) -> None:
        with Client(self.sock, timeout=30) as c:
            for i in pages:
                r = c.fetch(self.origin.url(f"/page/{i}"))
                assert r.ok and r.text == page_text(i), (r.error, r.message)

    def stop(self) -> tuple[int, str]:
        os.kill(self.master, signal.SIGUSR1)  # unshare itself would die of it, not pass it on
        return self.outer.stop(sig=0, timeout=30)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


@contextlib.contextmanager
def _contained(tmp: Path, origin) -> Iterator[_Contained]:
    d = _Contained(tmp, origin)
    try:
        yield d
    finally:
        if d.outer.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(d.master, signal.SIGKILL)
            d.outer.proc.kill()
            d.outer.proc.communicate(timeout=10)


CONTAINED_PREFIXES: list[str] = []  # the instance prefixes of the daemons _Contained started


def _contained_objects() -> set[str]:
    """What is in /dev/shm of the daemons this test started: by their instance tokens, never by the pid
    1 that every contained daemon on the machine shares."""
    return {e for e in names.owned_by(1) if names.instance_prefix(e) in CONTAINED_PREFIXES}


@pytest.mark.slow
@pytest.mark.skipif(bool(_pid_namespace_reason()), reason=_pid_namespace_reason() or "")
def test_two_daemons_as_pid_1_of_their_own_namespaces_share_dev_shm_and_keep_their_own_counts(
    tmp_path, origin
):
    """The second daemon deleted the first one's objects (its pid, 1, was "mine"; another namespace's pid
    is "dead"), and re-created its control segment under the same name: the first daemon's respawned
    workers then counted into the second's counter (A downloaded 0 | B downloaded 10)."""
    CONTAINED_PREFIXES.clear()
    try:
        a, b = _run_two_contained(tmp_path, origin)
    finally:
        left = _contained_objects()
        for entry in left:  # only after a failure: a daemon that was killed could not remove them
            (SHM / entry).unlink(missing_ok=True)
    assert (a.outer.proc.returncode, b.outer.proc.returncode) == (0, 0), (a.outer.stderr, b.outer.stderr)
    assert a.outer.last_line() == "downloaded 7 URLs", a.outer.stderr
    assert b.outer.last_line() == "downloaded 11 URLs", b.outer.stderr
    assert not left, f"the contained daemons left shared objects behind: {sorted(left)}"


def _run_two_contained(tmp_path: Path, origin) -> tuple[_Contained, _Contained]:
    """A and B up at once; each serves, loses worker 0 to SIGKILL and respawns it, serves again, stops."""
    with _contained(tmp_path / "a", origin) as a:
        a_objects = _contained_objects()
        assert a_objects, "the contained daemon's objects are not named with its pid, 1"
        with _contained(tmp_path / "b", origin) as b:
            assert a_objects <= _contained_objects(), "starting B removed A's shared objects"
            assert a.stats()["pid"] == b.stats()["pid"] == 1
            a.fetch(range(0, 3))
            b.fetch(range(10, 15))
            for d in (a, b):
                first = d.workers()[0]
                os.kill(first, signal.SIGKILL)
                wait_for(lambda d=d, first=first: first not in d.workers() and d.ready(), 30, "a respawn")
                assert d.stats()["workers"][0]["generation"] == 2
            a.fetch(range(20, 24))
            b.fetch(range(30, 36))
            b.stop()
        a.stop()
    return a, b
