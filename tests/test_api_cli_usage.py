"""The command line's surface: --version, where the config comes from, option flags checked before
anything is sent, conflicting flags, help text, and the package's public names."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import shmfetch
from shmfetch import config as config_mod
from shmfetch._version import __version__
from shmfetch.api.cli import build_parser
from shmfetch.cluster import streams
from shmfetch.options import NAMES as OPTION_NAMES

from .helpers import REPO, Daemon, daemon_stats, run_cli, running_daemon, started_pids, wait_for


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with running_daemon(tmp_path_factory.mktemp("cli_usage")) as d:
        # Daemon.wait_ready can return before the last worker is spawned (and its rings created), which
        # the first test would then count as objects it left behind.
        wait_for(lambda: all(w["ready"] for w in daemon_stats(d.socket)["workers"]), what="workers ready")
        yield d


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _cli_in(cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """``python -m shmfetch ARGS`` run from ``cwd`` (run_cli runs from the repository, which has a
    config.ini)."""
    with subprocess.Popen(
        [sys.executable, "-m", "shmfetch", *args],
        cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        started_pids.add(proc.pid)
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# -- version ----------------------------------------------------------------------------------------------


def test_version_flag_prints_the_package_version():
    p = run_cli("--version", timeout=20)
    assert (p.returncode, p.stdout.strip()) == (0, f"shmfetch {__version__}"), p.stderr


def test_stats_shows_the_daemons_version(daemon):
    assert daemon_stats(daemon.socket)["version"] == __version__
    p = run_cli("stats", "--socket", daemon.socket, timeout=20)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].startswith(f"shmfetch {__version__}  pid {daemon.pid}"), p.stdout


# -- help -------------------------------------------------------------------------------------------------


def test_every_option_of_every_command_has_one_line_of_help():
    for name, parser in _subcommands().items():
        for action in parser._actions:
            assert action.help and "\n" not in action.help, (name, action.option_strings or action.dest)


def test_every_command_takes_c_and_says_where_it_defaults_to():
    for name, parser in _subcommands().items():
        (c,) = (a for a in parser._actions if "-c" in a.option_strings)
        assert "./config.ini if it exists, else the built-in defaults" in c.help, name
        assert "./config.ini" in parser.format_help(), name


def test_every_command_that_creates_jobs_takes_the_same_option_flags():
    commands = _subcommands()
    flags = {
        name: {a.dest: (a.option_strings, a.help, a.choices) for a in commands[name]._actions if a.dest in OPTION_NAMES}
        for name in ("submit", "enqueue")
    }
    assert set(flags["submit"]) == set(OPTION_NAMES)
    assert flags["enqueue"] == flags["submit"]


# -- config -----------------------------------------------------------------------------------------------


def test_cache_without_c_or_config_ini_uses_the_defaults(tmp_path):
    """It failed with "cannot read config 'config.ini'"; by default the cache is off, and it says so."""
    p = _cli_in(tmp_path, "cache", "stats")
    assert p.returncode == 2
    assert p.stderr.strip() == "shmfetch: [cache] path is not set: the cache is off"


def test_an_explicit_c_that_does_not_exist_is_still_an_error(tmp_path):
    p = _cli_in(tmp_path, "stop", "-c", str(tmp_path / "nope.ini"))
    assert p.returncode == 2 and "cannot read config" in p.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")),
    reason="needs root with unshare and nsenter, to give the daemon's default paths a private /tmp and /run",
)
def test_serve_and_stop_without_c_or_config_ini_use_the_defaults(tmp_path):
    """``serve`` and ``stop`` run from a directory without config.ini, as a new user would. The daemon's
    default paths (root's: /run/shmfetch/) are made private: the commands run in a mount namespace with a
    fresh /run. Only /run: the checkout and its venv may live anywhere, /tmp included."""
    workdir = tmp_path / "w"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}  # root's default: /run/shmfetch
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs shmfetch-test /run && cd {workdir} && exec "$0" -m shmfetch serve',
            sys.executable]  # fmt: skip
    d = Daemon(tmp_path / "unused.ini", "/nonexistent", wait=False, argv=argv, env=env)
    try:
        d.socket = f"/proc/{d.pid}/root/run/shmfetch/shmfetch.sock"  # root's default without XDG_RUNTIME_DIR
        d.wait_ready()
        st = daemon_stats(d.socket)
        assert len(st["workers"]) == config_mod.DaemonConfig().workers
        stop = ["nsenter", "-t", str(d.pid), "-m", "sh", "-c", f'cd {workdir} && exec "$0" -m shmfetch stop',
                sys.executable]  # fmt: skip
        p = subprocess.run(stop, capture_output=True, text=True, timeout=60, env=env)
        assert (p.returncode, p.stdout.strip()) == (0, "downloaded 0 URLs"), p.stderr
        d.proc.wait(30)
        assert d.proc.returncode == 0, d.stderr
    finally:
        if d.proc.poll() is None:
            d.kill()


# -- option flags -----------------------------------------------------------------------------------------


BAD_FLAGS = [
    (["--timeout", "999"], "--timeout"),  # over the config's [fetch] timeout
    (["--timeout", "0"], "--timeout"),
    (["--max-bytes", "0"], "--max-bytes"),
    (["--accept-language", "é"], "--accept-language"),
]


@pytest.mark.parametrize(("flags", "named"), BAD_FLAGS)
def test_a_bad_option_flag_is_one_usage_error_and_nothing_is_sent(daemon, origin, flags, named):
    before = daemon_stats(daemon.socket)["connections"]
    urls = [origin.url("/page/1"), origin.url("/page/2")]
    p = run_cli("submit", "-c", str(daemon.config), *flags, *urls, timeout=20)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stdout == ""
    (line,) = p.stderr.splitlines()
    assert line.startswith(f"shmfetch: {named} ") and "Traceback" not in p.stderr
    assert daemon_stats(daemon.socket)["connections"] == before


def test_the_flag_check_is_the_daemons_rule_on_the_same_config(daemon, origin):
    """The test daemon's [fetch] timeout is 5: 5 passes, 5.5 is refused before sending."""
    assert config_mod.load(daemon.config).fetch.timeout == 5
    url = origin.url("/page/3")
    ok = run_cli("submit", "-c", str(daemon.config), "--json", "--timeout", "5", url, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"]
    bad = run_cli("submit", "-c", str(daemon.config), "--timeout", "5.5", url, timeout=30)
    assert bad.returncode == 2 and "at most the config's 5.0" in bad.stderr


@pytest.mark.parametrize(("flags", "named"), BAD_FLAGS)
def test_enqueue_checks_the_same_flags_before_connecting(tmp_path, flags, named):
    p = _cli_in(tmp_path, "enqueue", "--redis", "redis://127.0.0.1:1/0", *flags, "http://127.0.0.1/")
    assert p.returncode == 2
    (line,) = p.stderr.splitlines()
    assert line.startswith(f"shmfetch: {named} "), line


def test_enqueue_takes_mode_links_and_metadata(tmp_path, redis_server):
    p = run_cli(
        "enqueue", "--redis", redis_server.url, "--mode", "markdown", "--links", "--metadata",
        "--max-bytes", "5000", "http://127.0.0.1/a", timeout=30,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    ((eid, fields),) = redis_server.client().xrange(streams.DEFAULT_JOBS)
    assert eid.decode() == p.stdout.strip()
    url, _, _, options = streams.parse_job(fields)
    assert url == "http://127.0.0.1/a"
    assert options == {"mode": "markdown", "links": "true", "metadata": "true", "max_bytes": "5000"}


# -- conflicting flags ------------------------------------------------------------------------------------


def test_submit_with_both_redis_and_socket_is_a_usage_error(daemon, redis_server):
    """``--socket`` was silently ignored: the job went to Redis (where no daemon reads it)."""
    p = run_cli(
        "submit", "--redis", redis_server.url, "--socket", daemon.socket, "http://127.0.0.1/", timeout=20
    )
    assert p.returncode == 2
    assert "--socket: not allowed with argument --redis" in p.stderr
    assert redis_server.client().xlen(streams.DEFAULT_JOBS) == 0


# -- the package ------------------------------------------------------------------------------------------


def test_dir_lists_every_public_name_and_each_resolves():
    code = "import json, shmfetch; print(json.dumps(dir(shmfetch)))"
    listed = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       cwd=REPO, timeout=30, check=True).stdout)  # fmt: skip
    assert {"Client", "AsyncClient", "RedisClient", "Result", "ERRORS", "__version__"} <= set(listed)
    assert set(shmfetch.__all__) <= set(listed)
    for name in shmfetch.__all__:
        assert getattr(shmfetch, name) is not None


def test_through_a_socket_the_flags_are_checked_against_the_daemons_own_caps(daemon, origin, tmp_path):
    """Run where there is no config.ini: the defaults would allow --timeout 8 (their cap is 10 s), but
    this daemon's [fetch] timeout is 5, and the daemon tells the command so."""
    url = origin.url("/page/6")
    bad = _cli_in(tmp_path, "submit", "--socket", daemon.socket, "--timeout", "8", url)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "at most the config's 5.0" in bad.stderr and len(bad.stderr.splitlines()) == 1
    ok = _cli_in(tmp_path, "submit", "--socket", daemon.socket, "--timeout", "5", "--max-bytes", "100000", url)
    assert ok.returncode == 0, ok.stderr
