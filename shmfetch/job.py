"""A job (one client request on its way through the master) and the one place a client is answered.

Every answer to a request goes out through ``answer``: the fronts' refusals, cache hits, the dispatcher's
results and failures, and what is left at shutdown. The frame itself is ``protocol.result_frame`` or
``protocol.error_frame`` (the one result schema). The master reads result records with ``raw=True``
(dispatch/collector.py), so every string in a result frame is still the UTF-8 bytes the worker packed.
A socket client gets the frame packed as it is: msgpack's str type over those same bytes, so it receives
exactly what packing the decoded strings would have produced, without the master decoding and re-encoding
the text (about 250 us for an average 40 KB page on the 2-core test box; docs/BENCHMARKS.md). A sink that
takes a dict (the HTTP API, the Redis intake) gets the strings decoded.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import msgpack

from .protocol import FRAME_HDR

# use_bin_type=False gives the UTF-8 bytes the msgpack str type (a master-made frame has only str, so it
# packs as protocol.encode_frame would). Used on the event loop thread only (a Packer is not thread-safe).
_result_packer = msgpack.Packer(use_bin_type=False)


class Sink(Protocol):
    """Where a job's answer goes: a client connection (fronts/unix.py), an HTTP waiter, a Redis entry.

    A sink may also have ``send_encoded(bytes)``, taking a complete frame (length prefix included);
    answers then reach it without their strings being decoded in the master. A sink inside the master
    (a crawl's page, shmfetch/crawl) may have ``take_raw(dict)``: it gets the frame as it is, its strings
    still UTF-8 bytes, and decodes only what it reads. Others get ``send(dict)``.
    """

    closed: bool

    def send(self, frame: dict[str, Any]) -> None: ...


class Job:
    """One client request, from intake (shmfetch/intake.py) to its answer."""

    __slots__ = (
        "sink", "req_id", "url", "attempts", "t0", "ticket", "slots", "payload", "end",
        # the admission path (frontier/admission.py): per-request options, host gate, cache, timing
        "options", "ring_options", "arrived", "host", "holds_host", "polite_retries", "cache_key", "stale",
        "sent", "obey_robots",
    )  # fmt: skip

    def __init__(
        self,
        sink: Sink,
        req_id: Any,
        url: str,
        options: dict[str, Any] | None = None,
        obey_robots: bool = False,
    ):
        self.sink = sink
        self.req_id = req_id
        self.url = url
        self.attempts = 0  # crashes of a worker that had taken it
        self.t0 = time.perf_counter()
        self.ticket = 0
        self.slots = 0
        self.payload = b""
        self.end = 0  # end position of its record in the request ring it was put in
        self.options = options  # the client's per-request options, checked by options.check
        # what goes to the worker with the URL: those, plus the frontier's own (options.INTERNAL)
        self.ring_options: dict[str, Any] | None = options
        self.arrived = time.monotonic()
        self.host = ""
        self.holds_host = False  # counts against its host's per_host limit
        self.polite_retries = 0
        self.cache_key = ""
        # a stale cache entry this fetch revalidates (frontier.cache.Entry: not imported, job.py is ground)
        self.stale: Any = None
        self.sent = 0.0  # perf_counter at dispatch to a worker
        self.obey_robots = obey_robots  # robots.txt is obeyed for it even without [robots] obey (a crawl's)


def text(v: Any) -> Any:
    """``v`` with the UTF-8 bytes a raw read left, at any depth, decoded to str."""
    if type(v) is bytes:
        return v.decode("utf-8", "replace")
    if type(v) is list:
        return [text(x) for x in v]
    if type(v) is dict:
        return {text(k): text(x) for k, x in v.items()}
    return v


def answer(sink: Sink, frame: dict[str, Any]) -> None:
    """Answer ``sink`` with ``frame`` (a result or an error; its strings may still be UTF-8 bytes)."""
    send_encoded = getattr(sink, "send_encoded", None)
    if send_encoded is not None:
        if not sink.closed:  # a client that went away costs no pack
            body = _result_packer.pack(frame)
            send_encoded(FRAME_HDR.pack(len(body)) + body)
    elif (take_raw := getattr(sink, "take_raw", None)) is not None:
        take_raw(frame)
    else:
        sink.send({k: text(v) for k, v in frame.items()})
