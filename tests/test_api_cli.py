"""The command line and the tools as a user meets them: usage errors, failures printed once, a closed pipe,
loadgen's missing extras, and the README's demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .helpers import REPO, free_port, run_cli, running_daemon, started_pids


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with running_daemon(tmp_path_factory.mktemp("cli")) as d:
        yield d


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_submit_concurrency_below_one_is_a_usage_error(daemon, origin, value):
    """0 hung forever; -1 was a traceback with exit 1."""
    p = run_cli(
        "submit", "--socket", daemon.socket, "--concurrency", value, origin.url("/page/1"), timeout=20
    )
    assert p.returncode == 2, p.stderr
    assert "--concurrency" in p.stderr and "Traceback" not in p.stderr
    assert p.stdout == ""


def test_a_refused_connection_reads_connection_refused_host_port(daemon):
    port = free_port()
    p = run_cli("submit", "--socket", daemon.socket, "--json", f"http://127.0.0.1:{port}/", timeout=30)
    assert p.returncode == 1
    r = json.loads(p.stdout)
    assert (r["error"], r["message"]) == ("connect_error", f"connection refused: 127.0.0.1:{port}")


def test_plain_submit_prints_each_failure_once(daemon, origin):
    bad = f"http://127.0.0.1:{free_port()}/"
    p = run_cli("submit", "--socket", daemon.socket, origin.url("/page/1"), bad, timeout=30)
    assert p.returncode == 1
    assert (p.stdout + p.stderr).count(bad) == 1, (p.stdout, p.stderr)
    assert f"==> {bad} [connect_error] connection refused" in p.stdout


def test_submit_into_a_closed_pipe_ends_quietly(daemon, origin, tmp_path):
    """`submit ... | head -1` exited 1 ("some failed") and Python complained about the broken pipe."""
    urls = " ".join(origin.url(f"/page/{i}") for i in range(200))
    cmd = (
        f"{sys.executable} -m shmfetch submit --socket {daemon.socket} {urls} 2>{tmp_path}/err"
        f" | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}; cat {tmp_path}/err"
    )
    p = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=60)
    status, *err = p.stdout.splitlines()
    assert status == "0" and err == [], p.stdout


# -- tools/loadgen.py without the bench extra -----------------------------------------------------------

_WITHOUT_TQDM = (
    "import runpy, sys; sys.modules['tqdm'] = None; sys.argv = ['tools/loadgen.py', *sys.argv[1:]];"
    " runpy.run_path('tools/loadgen.py', run_name='__main__')"
)


def _loadgen_without_tqdm(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """loadgen in an interpreter where ``import tqdm`` fails, as in an install without the bench extra."""
    with subprocess.Popen(
        [sys.executable, "-c", _WITHOUT_TQDM, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        started_pids.add(proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_loadgen_says_what_to_install_before_starting_anything():
    p = _loadgen_without_tqdm("--spawn", "-n", "10", timeout=30)
    assert p.returncode == 2, p.stderr
    assert "pip install '.[bench]'" in p.stderr and "--no-progress" in p.stderr
    assert "Traceback" not in p.stderr
    assert p.stdout == ""  # nothing ran: no origin, no daemon, no report


@pytest.mark.slow
def test_loadgen_no_progress_runs_without_tqdm(tmp_path):
    report = tmp_path / "r.json"
    p = _loadgen_without_tqdm(
        "--spawn", "--workers", "1", "--threads", "2", "--small", "-n", "40", "-c", "4",
        "--no-progress", "--json", str(report), timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    got = json.loads(report.read_text())
    assert got["rounds"][0]["daemon"]["ok"] == 40, got["rounds"][0]["daemon"]


@pytest.mark.slow
def test_readme_demo_runs_end_to_end_beside_any_other_daemon():
    """The README's first command after its venv step. It used to wait only for config.ini's socket path
    to exist: with another daemon already serving there (exit 2 for the demo's own), it submitted to that
    one and then crashed on the empty stdout of its own. It now runs on a private socket and pidfile. (The
    old demo fails this test only while some daemon serves config.ini's socket, as one did when it was
    written; the test does not start one there itself, since that path is not the suite's to take.)"""
    p = subprocess.run(
        [sys.executable, "tools/demo.py"], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "downloaded 5 URLs", p.stdout[-2000:]
