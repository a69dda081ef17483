"""Rogue and careless clients, and overload: none of them may stop the daemon from serving everyone else."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from shmfetch import Client
from shmfetch.protocol import FrameDecoder, encode_frame

from .helpers import page_text, proc_kib, running_daemon


def _raw(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(path)
    return s


def _frames(s: socket.socket, n: int) -> list[dict]:
    dec, out = FrameDecoder(1 << 30), []
    while len(out) < n:
        data = s.recv(1 << 16)
        if not data:
            break
        out += dec.feed(data)
    return out


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        while s.recv(1 << 16):
            pass
        return True
    except ConnectionResetError:
        return True


def _still_serves(path: str, origin, i: int = 5) -> None:
    with Client(path, timeout=20) as c:
        assert c.fetch(origin.url(f"/page/{i}")).text == page_text(i)


@pytest.mark.slow
def test_malformed_msgpack_gets_an_error_frame_and_is_closed(tmp_path, origin):
    with running_daemon(tmp_path) as d:
        s = _raw(d.socket)
        s.sendall(struct.pack(">I", 3) + b"\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
        (f,) = _frames(s, 1)
        assert f["ok"] is False and f["error"] == "bad_request" and f["id"] is None
        assert _closed_by_peer(s)
        _still_serves(d.socket, origin)


@pytest.mark.slow
def test_oversized_frame_is_refused_without_reading_it(tmp_path, origin):
    with running_daemon(tmp_path, daemon={"max_frame_bytes": 4096}) as d:
        s = _raw(d.socket)
        s.sendall(struct.pack(">I", 50 << 20) + b"x" * 1000)
        (f,) = _frames(s, 1)
        assert f["error"] == "frame_too_large" and "4096" in f["message"]
        assert _closed_by_peer(s)
        _still_serves(d.socket, origin)


@pytest.mark.slow
def test_wrong_shapes_get_error_frames_and_the_connection_goes_on(tmp_path, origin):
    with running_daemon(tmp_path) as d:
        s = _raw(d.socket)
        bad = [
            [1, 2, 3],  # not a map
            {"url": origin.url("/page/1")},  # no id
            {"id": 2},  # no url
            {"id": 3, "url": 42},  # url of the wrong type
            {"id": 4, "op": "reboot"},  # unknown op
            {"id": 5, "url": "x" * 9000},  # absurdly long URL
        ]
        s.sendall(
            b"".join(encode_frame(b) for b in bad) + encode_frame({"id": 6, "url": origin.url("/page/6")})
        )
        got = {f["id"]: f for f in _frames(s, len(bad) + 1)}
        frames = list(got.values())
        assert len(frames) == 6  # the two errors without an id share the key None
        assert got[None]["error"] == "bad_request"
        assert got[2]["error"] == "bad_request" and "url" in got[2]["message"]
        assert got[3]["error"] == "bad_request"
        assert got[4]["error"] == "bad_request" and "reboot" in got[4]["message"]
        assert got[5]["error"] == "invalid_url"
        assert got[6]["ok"] and got[6]["text"] == page_text(6)
        s.close()


@pytest.mark.slow
def test_silent_and_half_frame_clients_do_not_block_others(tmp_path, origin):
    with running_daemon(tmp_path) as d:
        silent = [_raw(d.socket) for _ in range(20)]
        half = _raw(d.socket)
        half.sendall(struct.pack(">I", 100) + b"\x81")  # a frame that never completes
        _still_serves(d.socket, origin)
        for s in [*silent, half]:
            s.close()
        _still_serves(d.socket, origin, 6)


@pytest.mark.slow
def test_client_that_disconnects_mid_request_leaks_nothing(tmp_path, origin):
    with running_daemon(tmp_path, daemon={"workers": 2, "threads": 2, "max_inflight_per_worker": 4}) as d:
        for _ in range(3):
            s = _raw(d.socket)
            s.sendall(b"".join(encode_frame({"id": i, "url": origin.url("/slow?s=0.2")}) for i in range(40)))
            s.sendall(struct.pack(">I", 50))  # and half a frame
            s.close()
        with Client(d.socket) as c:
            deadline = time.monotonic() + 30
            while (st := c.stats())["in_flight"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert st["in_flight"] == 0 and st["pending"] == 0
            # every worker's credit came back: a full window per worker still goes through
            results = list(c.fetch_many([origin.url(f"/page/{i}") for i in range(16)], concurrency=16))
            assert all(r.ok for r in results)
            assert c.stats()["connections"] == 1


@pytest.mark.slow
def test_client_that_never_reads_is_cut_off_and_memory_stays_bounded(tmp_path, origin):
    with running_daemon(tmp_path, daemon={"client_buffer_bytes": 1 << 20}) as d:
        s = _raw(d.socket)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        big = origin.url("/text?bytes=262144")
        s.sendall(b"".join(encode_frame({"id": i, "url": big}) for i in range(200)))  # ~50 MB of answers
        deadline = time.monotonic() + 30
        cut = False
        while time.monotonic() < deadline and not cut:
            with Client(d.socket) as c:
                cut = c.stats()["connections"] == 1  # only the stats client remains
            time.sleep(0.2)
        assert cut, "the non-reading client was never cut off"
        assert proc_kib(d.pid, "VmRSS") < 200_000
        s.close()
        _still_serves(d.socket, origin)


@pytest.mark.slow
def test_a_thousand_concurrent_connections(tmp_path, origin):
    with running_daemon(tmp_path, daemon={"workers": 2, "threads": 8}) as d:
        socks = [_raw(d.socket) for _ in range(1000)]
        for i, s in enumerate(socks):
            s.sendall(encode_frame({"id": i, "url": origin.url(f"/page/{i % 50}")}))
        for i, s in enumerate(socks):
            (f,) = _frames(s, 1)
            assert f["id"] == i and f["ok"] and f["text"] == page_text(i % 50)
            s.close()
        _still_serves(d.socket, origin)


@pytest.mark.slow
def test_overload_is_answered_at_once_and_bounded(tmp_path, origin):
    cfg = {"workers": 1, "threads": 1, "max_inflight_per_worker": 1, "max_pending": 5}
    with running_daemon(tmp_path, daemon=cfg) as d:
        s = _raw(d.socket)
        t0 = time.monotonic()
        s.sendall(b"".join(encode_frame({"id": i, "url": origin.url("/slow?s=0.2")}) for i in range(50)))
        frames = _frames(s, 44)  # everything past 1 in flight + 5 pending is refused immediately
        assert time.monotonic() - t0 < 1.5
        assert all(f["error"] == "overloaded" for f in frames)
        rest = _frames(s, 6)
        assert all(f["ok"] for f in rest)
        s.close()


@pytest.mark.slow
def test_flood_keeps_master_memory_bounded(tmp_path, origin):
    with running_daemon(tmp_path, daemon={"max_pending": 2000, "workers": 2}) as d:
        s = _raw(d.socket)
        payload = b"".join(encode_frame({"id": i, "url": origin.url("/page/1")}) for i in range(20000))
        s.sendall(payload)
        got = _frames(s, 20000)
        assert len(got) == 20000
        codes = {f.get("error") for f in got}
        assert codes <= {None, "overloaded"}
        assert proc_kib(d.pid, "VmRSS") < 150_000, "master RSS over the documented 150 MB"
        for w in d.worker_pids():
            assert proc_kib(w, "VmRSS") < 100_000
        s.close()
