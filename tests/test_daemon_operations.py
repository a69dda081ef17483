"""Operating the daemon: stats, the Python clients, the HTTP API, and the shipped deployment files (the
stop command and logging are the master's: test_master_lifecycle.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shmfetch import AsyncClient, Client
from shmfetch.protocol import RESULT_FIELDS, encode_frame

from .helpers import REPO, daemon_stats, free_port, page_text, run_cli, running_daemon, wait_for, write_config

# -- stats ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stats_are_exact_after_known_traffic(tmp_path, origin):
    ok_urls = [origin.url(f"/page/{i}") for i in range(6)]
    bad = {
        origin.url("/status/404"): "http_status",
        origin.url("/status/410"): "http_status",
        "http://127.0.0.1:1/refused": "connect_error",
        "ftp://127.0.0.1/x": "unsupported_scheme",
    }
    with running_daemon(tmp_path, fetch={"retries": 0}) as d:
        with Client(d.socket) as c:
            results = list(c.fetch_many(ok_urls + list(bad), concurrency=4))
        assert sum(r.ok for r in results) == 6
        assert {r.url: r.error for r in results if not r.ok} == bad
        # The worker bumps the shared counter just after committing the result: give it that moment.
        wait_for(lambda: daemon_stats(d.socket)["downloaded"] == 6, 5, "the counter")

        p = run_cli("stats", "-c", str(d.config), "--json")
        assert p.returncode == 0, p.stderr
        st = json.loads(p.stdout)
        assert st["pid"] == d.pid and st["uptime_s"] > 0
        assert st["downloaded"] == 6 and st["ok_delivered"] == 6
        assert st["failures"] == {"http_status": 2, "connect_error": 1, "unsupported_scheme": 1}
        assert st["in_flight"] == 0 and st["pending"] == 0
        workers = st["workers"]
        assert [w["index"] for w in workers] == [0, 1]
        assert sum(w["served"] for w in workers) == 10
        assert [w["served"] for w in workers] == [5, 5]  # strict round robin
        assert sorted(w["pid"] for w in workers) == sorted(d.worker_pids())
        assert all(w["alive"] and w["restarts"] == 0 and w["in_flight"] == w["queued"] == 0 for w in workers)
        # every completion lies within both windows; a daemon up for less than a window divides by the
        # time it has run (at least 1 s), not by the window
        up = st["uptime_s"]
        assert st["pages_per_s_60s"] == pytest.approx(6 / max(1.0, min(60.0, up)), rel=0.1)
        assert 0 < st["pages_per_s_10s"] <= 1.1 * 6 / max(1.0, min(10.0, up))

        p = run_cli("stats", "--socket", d.socket)
        assert p.returncode == 0, p.stderr
        assert f"pid {d.pid}" in p.stdout and "downloaded 6" in p.stdout
        assert "failures: connect_error=1, http_status=2, unsupported_scheme=1" in p.stdout
        assert "worker 0:" in p.stdout and "served 5" in p.stdout and "restarts 0" in p.stdout


@pytest.mark.slow
def test_stats_show_in_flight_and_queued_per_worker(tmp_path, origin):
    with running_daemon(tmp_path, daemon={"workers": 1, "threads": 1}) as d:
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.socket)
        s.sendall(b"".join(encode_frame({"id": i, "url": origin.url("/slow?s=1")}) for i in range(3)))
        with Client(d.socket) as c:
            # one thread: one fetch running in the worker (taken from its ring), two waiting in the master
            # for a free thread
            st = wait_for(
                lambda: (x := c.stats())["workers"][0]["queued"] == 0 and x["pending"] == 2 and x,
                5,
                "the worker to take one",
            )
        assert st["in_flight"] == 3 and st["dispatched"] == 1
        assert st["workers"][0]["in_flight"] == 1
        s.close()


# -- Python clients -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fetch_many_thousand_urls_in_a_bounded_window(tmp_path, origin):
    n, window = 1000, 16
    pulled = 0

    def urls() -> Iterator[str]:
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield origin.url(f"/page/{i % 50}")

    received, widest = 0, 0
    with running_daemon(tmp_path) as d:
        with Client(d.socket) as c:
            for r in c.fetch_many(urls(), concurrency=window):
                assert r.ok and r.text == page_text(int(r.url.rsplit("/", 1)[1])), r
                received += 1
                # the sender pulls one URL before it waits for room, so the window may show one more
                widest = max(widest, pulled - received)
                assert pulled - received <= window + 1
    assert received == n and pulled == n
    assert widest >= window // 2  # it did keep many in flight


@pytest.mark.slow
def test_async_client_fetch_fetch_many_and_stats(tmp_path, origin):
    async def run(sock: str) -> None:
        async with await AsyncClient.connect(sock) as c:
            r = await c.fetch(origin.url("/page/1"))
            assert r.ok and r.text == page_text(1) and r.worker in (0, 1)
            bad = await c.fetch(origin.url("/status/404"))
            assert not bad.ok and bad.error == "http_status" and bad.status == 404
            got = [
                x async for x in c.fetch_many([origin.url(f"/page/{i}") for i in range(20)], concurrency=5)
            ]
            assert sorted(x.text for x in got) == sorted(page_text(i) for i in range(20))
            st = await c.stats()
            assert st["failures"] == {"http_status": 1} and st["ok_delivered"] == 21

    with running_daemon(tmp_path) as d:
        asyncio.run(run(d.socket))


# -- HTTP API -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_http_api_text_json_and_status_codes(tmp_path, origin):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sections = {
        # one worker with one slot of credit and a queue of one, so that overload is cheap to provoke
        "daemon": {"workers": 1, "threads": 1, "max_inflight_per_worker": 1, "max_pending": 1},
        "fetch": {"timeout": 1, "retries": 0},
        "http": {"listen": f"127.0.0.1:{port}"},
    }
    with running_daemon(tmp_path, **sections) as d, requests.Session() as s:
        wait_for(lambda: _connects(port), 20, "the HTTP port")

        def get(url: str | None = None, path: str = "/fetch", **kw: object) -> requests.Response:
            return s.get(base + path, params={"url": url} if url is not None else None, timeout=20, **kw)

        r = get(origin.url("/page/3"))
        assert r.status_code == 200 and r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.text == page_text(3)

        r = get(origin.url("/page/4"), headers={"Accept": "application/json"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert set(body) == set(RESULT_FIELDS)
        assert body["ok"] is True and body["text"] == page_text(4) and body["status"] == 200

        assert get(path="/fetch").status_code == 400  # no url
        assert get("").status_code == 400
        r = get("not a url")
        assert r.status_code == 400 and r.text.startswith("invalid_url")
        assert get("ftp://127.0.0.1/").status_code == 400
        r = get(f"http://127.0.0.2:{origin.port}/page/1")  # loopback, but outside allow_networks
        assert r.status_code == 403 and r.headers["x-shmfetch-error"] == "blocked_address"
        r = get(origin.url("/status/404"), headers={"Accept": "application/json"})
        assert r.status_code == 502 and r.json()["error"] == "http_status" and r.json()["status"] == 404
        r = get("http://127.0.0.1:1/")
        assert r.status_code == 502 and r.text.startswith("connect_error")
        r = get(origin.url("/slow?s=2"))
        assert r.status_code == 504 and r.headers["x-shmfetch-error"] == "timeout"
        assert get(path="/nothing").status_code == 404
        assert s.post(base + "/fetch", timeout=5).status_code == 405

        # overload: one fetch in the worker, one queued in the master, so the next is refused at once
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(d.socket)
        raw.sendall(b"".join(encode_frame({"id": i, "url": origin.url("/slow?s=0.8")}) for i in range(2)))
        wait_for(lambda: daemon_stats(d.socket)["pending"] == 1, 5, "a queued request")
        r = get(origin.url("/page/5"), headers={"Accept": "application/json"})
        assert r.status_code == 503 and r.json()["error"] == "overloaded"
        raw.close()  # its queued request is dropped unfetched; the one in the worker completes
        wait_for(
            lambda: (x := daemon_stats(d.socket))["in_flight"] == 0 and x["downloaded"] == 3, 10, "quiet"
        )

        r = get(path="/stats")
        assert r.status_code == 200
        st = r.json()
        assert st["pid"] == d.pid and st["downloaded"] == 3
        assert st["failures"]["overloaded"] == 1 and st["failures"]["blocked_address"] == 1
        assert st["http_connections"] >= 1
        rc, _ = d.stop()
    assert rc == 0 and d.last_line().startswith("downloaded ")


def test_http_port_in_use_is_a_clean_exit_2(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = write_config(tmp_path, http={"listen": f"127.0.0.1:{busy.getsockname()[1]}"})
        p = run_cli("serve", "-c", str(cfg))
    assert p.returncode == 2, p.stderr
    assert "cannot listen for HTTP" in p.stderr
    assert not os.path.exists(tmp_path / "shmfetch.pid") and not os.path.exists(tmp_path / "shmfetch.sock")


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# -- deployment -----------------------------------------------------------------------------------------

CONTRIB = Path(REPO) / "contrib"


def test_systemd_unit_verifies(tmp_path):
    unit = CONTRIB / "shmfetch.service"
    text = unit.read_text()
    for must in ("Type=simple", "KillSignal=SIGUSR1", "Restart=on-failure", "RuntimeDirectory=shmfetch"):
        assert must in text
    settings = [x.strip() for x in text.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    assert "PrivateDevices=yes" not in settings  # would hide /dev/shm on older systemd
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here; the unit's content was checked only")
    p = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # Lines about the environment (no running systemd, binaries absent in this container) are not
    # about the unit; anything naming the unit file is.
    problems = [x for x in (p.stdout + p.stderr).splitlines() if "shmfetch.service" in x]
    assert not problems, "\n".join(problems)


def test_shipped_contrib_config_is_valid_and_keeps_http_off():
    from shmfetch import config

    cfg = config.load(CONTRIB / "config.ini")
    assert cfg.http.listen == ""
    assert cfg.daemon.socket == "/run/shmfetch/shmfetch.sock"
    assert cfg.daemon.pidfile == "/run/shmfetch/shmfetch.pid"
    unit = (CONTRIB / "shmfetch.service").read_text()
    timeout = next(int(x.split("=")[1]) for x in unit.splitlines() if x.startswith("TimeoutStopSec="))
    assert timeout > cfg.daemon.drain_timeout
