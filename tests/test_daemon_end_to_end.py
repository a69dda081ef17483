"""The whole path through a real daemon: client -> socket -> master -> rings -> workers -> origin and back."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections import Counter

import pytest

from shmfetch import Client
from shmfetch.protocol import encode_frame

from .helpers import cpu_ticks, page_text, run_cli, running_daemon, wait_workers_ready


@pytest.mark.slow
def test_round_robin_and_exact_count(tmp_path, origin):
    workers, m = 3, 31
    # As many fetch threads per worker as requests in flight: no worker is ever full, so the dispatch's
    # round robin among workers with a free thread is a strict round robin here, however loaded the box.
    with running_daemon(tmp_path, daemon={"workers": workers, "threads": 8}) as d:
        wait_workers_ready(d.socket)  # a worker still booting is skipped once its threads' worth waits
        with Client(d.socket) as c:
            results = list(c.fetch_many([origin.url(f"/page/{i}") for i in range(m)], concurrency=8))
        by_worker = Counter(r.worker for r in results)
        assert sorted(by_worker) == list(range(workers))
        for n in by_worker.values():
            assert abs(n - m / workers) <= 1, by_worker
        assert all(r.ok for r in results)
        assert {r.url for r in results} == {origin.url(f"/page/{i}") for i in range(m)}
        r = next(r for r in results if r.url.endswith("/page/7"))
        assert r.text == page_text(7) and r.status == 200 and r.content_type == "text/html"
        rc, out = d.stop()
    assert rc == 0
    assert d.last_line() == f"downloaded {m} URLs"


@pytest.mark.slow
def test_count_is_successes_only(tmp_path, origin):
    ok_urls = [origin.url(f"/page/{i}") for i in range(5)]
    bad_urls = [origin.url("/status/404"), origin.url("/status/500"), "http://127.0.0.1:1/refused"]
    with running_daemon(tmp_path) as d:
        with Client(d.socket) as c:
            res = {r.url: r for r in c.fetch_many(ok_urls + bad_urls)}
        assert [res[u].ok for u in ok_urls] == [True] * 5
        assert res[bad_urls[0]].error == "http_status" and res[bad_urls[0]].status == 404
        assert res[bad_urls[1]].error == "http_status" and res[bad_urls[1]].status == 500
        assert res[bad_urls[2]].error == "connect_error" and res[bad_urls[2]].ok is False
        rc, out = d.stop()
    assert rc == 0
    assert out.strip().splitlines()[-1] == "downloaded 5 URLs"


@pytest.mark.slow
def test_five_mib_of_text_comes_back_byte_identical(tmp_path, origin):
    n = 5 * 1024 * 1024
    line = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 3)[:99] + b"\n"
    expected = (line * (n // len(line) + 1))[:n].decode()
    with running_daemon(tmp_path) as d:
        with Client(d.socket) as c:
            r = c.fetch(origin.url(f"/text?bytes={n}"))
            assert r.ok, r
            assert len(r.text) == n and r.text == expected
            # and the ring still works for ordinary pages afterwards
            assert c.fetch(origin.url("/page/3")).text == page_text(3)


@pytest.mark.slow
def test_pipelined_requests_on_one_connection_all_come_back(tmp_path, origin):
    n = 200
    with running_daemon(tmp_path) as d:
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.socket)
        s.sendall(b"".join(encode_frame({"id": i, "url": origin.url(f"/page/{i % 17}")}) for i in range(n)))
        from shmfetch.protocol import FrameDecoder

        dec, got = FrameDecoder(1 << 30), []
        s.settimeout(30)
        while len(got) < n:
            got += dec.feed(s.recv(65536))
        s.close()
    assert sorted(f["id"] for f in got) == list(range(n))
    assert all(f["ok"] and f["text"] == page_text(f["id"] % 17) for f in got)


@pytest.mark.slow
def test_idle_daemon_uses_no_cpu(tmp_path, origin):
    with running_daemon(tmp_path) as d:
        with Client(d.socket) as c:
            assert c.fetch(origin.url("/page/1")).ok
        time.sleep(1.0)  # let start-up work (imports, first fetch) finish
        pids = [d.pid, *d.worker_pids()]
        before = sum(cpu_ticks(p) for p in pids)
        time.sleep(3.0)
        used = sum(cpu_ticks(p) for p in pids) - before
    # clock ticks are 10 ms: a polling loop anywhere would show up as several ticks in 3 s
    assert used <= 2, f"idle daemon used {used} ticks in 3 s"


def _submit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return run_cli("submit", *args, stdin=stdin)


@pytest.mark.slow
def test_submit_cli_json_lines_stdin_and_exit_codes(tmp_path, origin):
    with running_daemon(tmp_path) as d:
        good = [origin.url(f"/page/{i}") for i in range(3)]
        p = _submit("--socket", d.socket, "--json", "-", stdin="\n".join(good) + "\n")
        assert p.returncode == 0, p.stderr
        rows = [json.loads(line) for line in p.stdout.splitlines()]
        assert {r["url"] for r in rows} == set(good)
        for r in rows:
            assert {
                "url",
                "ok",
                "status",
                "final_url",
                "content_type",
                "text",
                "error",
                "worker",
                "elapsed_ms",
            } <= set(r)
            assert r["ok"] and r["error"] is None and r["worker"] in (0, 1)
        p = _submit("-c", str(d.config), good[0], origin.url("/status/404"))
        assert p.returncode == 1
        assert page_text(0) in p.stdout and "http_status" in p.stdout
        p = _submit("--socket", d.socket, good[1])
        assert p.returncode == 0 and p.stdout.splitlines()[1:] == page_text(1).splitlines()
    p = _submit("--socket", str(tmp_path / "nobody.sock"), good[0])
    assert p.returncode == 2 and "no shmfetch daemon" in p.stderr
