"""The one result schema (protocol.Outcome / Result): every interface carries exactly its fields."""

from __future__ import annotations

import json
import socket
from dataclasses import fields

import msgpack
import pytest

from shmfetch.protocol import (
    OUTCOME_FIELDS,
    RESULT_FIELDS,
    FrameDecoder,
    Outcome,
    Result,
    decode_frame_body,
    encode_frame,
    error_frame,
    pack_result,
    result_frame,
)

from .helpers import page_text, run_cli, running_daemon


def _sample_outcome() -> Outcome:
    """An Outcome with a non-default value in every field, whatever fields the schema has (msgpack carries
    a str in any field, so a field added later is covered too)."""
    values: dict[str, object] = {f.name: f"value-{i}-ü" for i, f in enumerate(fields(Outcome))}
    values.update(ok=False, status=418)
    return Outcome(**values)


def test_a_result_survives_the_ring_and_the_frame_field_by_field():
    out = _sample_outcome()
    record = msgpack.unpackb(pack_result(7, out), raw=True)  # as the master's collector reads it
    assert record[0] == 7 and len(record) == 1 + len(OUTCOME_FIELDS)
    frame = result_frame(3, "http://127.0.0.1/x", 1, 2.5, record)
    body = msgpack.packb(frame, use_bin_type=False)  # as the dispatcher packs it for a client
    got = Result.from_frame(decode_frame_body(body))
    assert got == Result(**vars(out), url="http://127.0.0.1/x", worker=1, elapsed_ms=2.5)


def test_an_error_answer_to_a_fetch_is_a_whole_result():
    frame = error_frame(5, "overloaded", url="http://127.0.0.1/")
    assert set(frame) == {"id", *RESULT_FIELDS}
    assert Result.from_frame(frame) == Result(
        ok=False, error="overloaded", message=frame["message"], url="http://127.0.0.1/"
    )


@pytest.mark.slow
def test_the_socket_and_the_json_lines_carry_exactly_the_schema(tmp_path, origin):
    url = origin.url("/page/3")
    with running_daemon(tmp_path) as d:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(20)
        s.connect(d.socket)
        s.sendall(encode_frame({"id": 1, "url": url}) + encode_frame({"id": 2, "url": "x" * 9000}))
        dec, frames = FrameDecoder(1 << 30), []
        while len(frames) < 2:
            frames += dec.feed(s.recv(1 << 16))
        s.close()
        by_id = {f["id"]: f for f in frames}
        assert set(by_id[1]) == set(by_id[2]) == {"id", *RESULT_FIELDS}
        assert by_id[1]["text"] == page_text(3) and by_id[2]["error"] == "invalid_url"
        r = run_cli("submit", "-c", str(d.config), "--json", url, timeout=30)
        assert r.returncode == 0, r.stderr
        (line,) = r.stdout.splitlines()
        assert list(json.loads(line)) == list(RESULT_FIELDS)
        d.stop()
