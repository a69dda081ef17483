"""The project as a newcomer gets it: the suite passes in any clone named shmfetch, beside another daemon,
and every documented command runs the README's virtualenv."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .helpers import REPO, Daemon, write_config

# -- the suite itself: hermetic in any clone ---------------------------------------------------------------


def _copy_checkout(dest: Path) -> None:
    """The checkout's files as they are now (tracked ones, with uncommitted edits) into ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True, timeout=30,
    ).stdout.split(b"\0")  # fmt: skip
    for rel in filter(None, files):
        src, dst = REPO / os.fsdecode(rel), dest / os.fsdecode(rel)
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())


_SPAWN_PROBE = """
import multiprocessing as mp
import time


def test_spawns_a_process():  # starts multiprocessing's resource tracker, which outlives the test
    p = mp.get_context("spawn").Process(target=time.sleep, args=(0,))
    p.start()
    p.join(60)
    assert p.exitcode == 0


def test_after_it():
    pass
"""


def _venv_inside(clone: Path) -> Path:
    """A virtualenv at ``clone/.venv`` (as the README makes one) that sees this interpreter's packages:
    its python's path, and so the command lines of what it spawns, contain the clone's folder name."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(p for p in sys.path if p.endswith("site-packages"))
    (next(venv.glob("lib/python*/site-packages")) / "parent.pth").write_text(site + "\n")
    return venv / "bin" / "python"


@pytest.mark.slow
def test_suite_passes_in_a_clone_named_shmfetch_while_another_daemon_runs(tmp_path):
    """Regression: in a folder named shmfetch, multiprocessing's resource tracker (its command line
    holds the path) was flagged as a leaked child; and every shmfetch object on the machine, another
    daemon's included, counted as leaked by the test that saw it."""
    clone = tmp_path / "shmfetch"
    _copy_checkout(clone)
    (clone / "tests" / "test_spawn_probe.py").write_text(_SPAWN_PROBE)
    python = _venv_inside(clone)
    other = tmp_path / "other"
    other.mkdir()
    d = Daemon(write_config(other), other / "shmfetch.sock")
    stop = threading.Event()

    def churn() -> None:  # the other daemon creates and removes objects all along (respawned workers)
        while not stop.wait(0.5):
            for pid in d.worker_pids()[:1]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        p = subprocess.run(
            [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_spawn_probe.py",
             "tests/test_ipc_ring.py", "-k", "probe or spawns or after_it or wrap_around or close_wakes"],
            cwd=clone, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        stop.set()
        churner.join(10)
        code, _ = d.stop()
    assert "respawned" in d.stderr, "the other daemon's workers were not churned"
    assert p.returncode == 0, p.stdout[-3000:]
    last = p.stdout.splitlines()[-1]  # "N passed, M deselected in ...": the selected tests ran, all passed
    assert re.match(r"\d+ passed, \d+ deselected in ", last) and int(last.split()[0]) >= 4, p.stdout[-3000:]
    assert code == 0


def test_docs_and_tools_run_python_from_the_readme_venv():
    # Regression: docs/BENCHMARKS.md and docs/FETCH.md called a private virtualenv's
    # Python at a path that existed only on the machine that wrote them. Every command we document or ship
    # runs the README's .venv (or whatever python is first on PATH).
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "tools").glob("*"))]
    bad = []
    for path in paths:
        if path.is_file():
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                for m in re.finditer(r"(\S*)/bin/python", line):
                    if not m.group(1).endswith(".venv"):
                        bad.append(f"{path.relative_to(REPO)}:{n}: {m.group(0)}")
    assert not bad, "a command names a Python outside the README's .venv:\n" + "\n".join(bad)
