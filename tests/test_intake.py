"""The one intake path: what it refuses (``invalid_url``, ``bad_request``, with the same messages for every
front), in which order, and that an accepted request becomes one Job with its options checked, submitted."""

from __future__ import annotations

import pytest

from shmfetch.config import FetchConfig
from shmfetch.intake import Intake, Refused
from shmfetch.job import Job
from shmfetch.options import MAX_URL_CHARS, OptionError

from .request_path import Recorder

URL = "http://127.0.0.1:9/page"
LONG = "http://127.0.0.1:9/" + "x" * MAX_URL_CHARS


@pytest.fixture
def submitted() -> list[Job]:
    return []


@pytest.fixture
def intake(submitted) -> Intake:
    return Intake(submitted.append, FetchConfig(timeout=10))


def test_an_accepted_request_is_one_job_with_checked_options_submitted(intake, submitted):
    sink = Recorder()
    job = intake.request(sink, 7, URL, {"mode": "markdown", "timeout": 2, "links": True})
    assert submitted == [job] and sink.frames == []
    assert (job.sink, job.req_id, job.url) == (sink, 7, URL)
    assert job.options == {"mode": "markdown", "timeout": 2.0, "links": True}
    assert intake.request(sink, 8, URL, None).options is None


def test_a_url_over_the_limit_is_answered_invalid_url_and_not_submitted(intake, submitted):
    sink = Recorder()
    assert intake.request(sink, 1, LONG, None) is None
    (frame,) = sink.frames
    assert (frame["id"], frame["ok"], frame["error"]) == (1, False, "invalid_url")
    assert frame["message"] == f"URL longer than {MAX_URL_CHARS} characters" and frame["url"] == LONG
    assert submitted == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "pdf"}, "option 'mode' = 'pdf': must be one of text, main, markdown"),
        ({"timeout": 11}, "option 'timeout' = 11 is out of range: more than 0, at most the config's 10"),
        ({"reboot": True}, "reboot"),
        (["mode", "text"], "'options' must be a map"),
        (OptionError("option 'mode' is given twice"), "option 'mode' is given twice"),
    ],
)
def test_bad_options_are_answered_bad_request_naming_them(intake, submitted, options, message):
    sink = Recorder()
    assert intake.request(sink, 2, URL, options) is None
    (frame,) = sink.frames
    assert frame["error"] == "bad_request" and message in frame["message"], frame
    assert frame["url"] == URL and submitted == []


def test_the_url_is_checked_before_the_options(intake):
    sink = Recorder()
    intake.request(sink, 3, LONG, {"mode": "pdf"})
    assert sink.frames[0]["error"] == "invalid_url"


def test_take_raises_refused_and_answers_nothing(intake, submitted):
    sink = Recorder()
    with pytest.raises(Refused) as e:
        intake.take(sink, 4, URL, {"mode": "pdf"})
    assert e.value.code == "bad_request" and sink.frames == [] and submitted == []


def test_a_refusal_reaches_a_socket_client_as_one_encoded_frame(intake):
    """A sink with send_encoded (the Unix socket's connection) gets the frame packed, length included."""
    import msgpack

    from shmfetch.protocol import FRAME_HDR

    class Conn:
        closed = False

        def __init__(self) -> None:
            self.data = b""

        def send(self, frame: dict) -> None:
            raise AssertionError("answers go encoded")

        def send_encoded(self, data: bytes) -> None:
            self.data += data

    conn = Conn()
    intake.request(conn, 5, LONG, None)
    (n,) = FRAME_HDR.unpack_from(conn.data)
    frame = msgpack.unpackb(conn.data[FRAME_HDR.size :], raw=False)
    assert n == len(conn.data) - FRAME_HDR.size and frame["error"] == "invalid_url" and frame["id"] == 5
