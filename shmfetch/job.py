"""Client frames for results: how a result record from a ring becomes the answer a client receives.

The frame itself is ``protocol.result_frame`` (the one result schema). The master reads records with
``raw=True`` (collector.py), so every string in a frame is still the UTF-8 bytes the worker packed.
A socket client gets the frame packed as it is: msgpack's str type over those same bytes, so it receives
exactly what packing the decoded strings would have produced, without the master decoding and re-encoding
the text (about 250 us for an average 40 KB page on the 2-core test box; docs/BENCHMARKS.md). A sink that
takes a dict (the HTTP API) gets the strings decoded.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgpack

from .protocol import FRAME_HDR

# use_bin_type=False gives the UTF-8 bytes the msgpack str type. Used on the event loop thread only (a
# Packer is not thread-safe).
_result_packer = msgpack.Packer(use_bin_type=False)


class Sink(Protocol):
    """Where a job's answer goes: a client connection (listener.ClientConnection) or an HTTP waiter.

    A sink may also have ``send_encoded(bytes)``, taking a complete frame (length prefix included);
    results then reach it without their strings being decoded in the master. Others get ``send(dict)``.
    """

    closed: bool

    def send(self, frame: dict[str, Any]) -> None: ...


def text(v: Any) -> Any:
    """``v`` with the UTF-8 bytes a raw read left, at any depth, decoded to str."""
    if type(v) is bytes:
        return v.decode("utf-8", "replace")
    if type(v) is list:
        return [text(x) for x in v]
    if type(v) is dict:
        return {text(k): text(x) for k, x in v.items()}
    return v


def send_result(sink: Sink, frame: dict[str, Any]) -> None:
    """Answer ``sink`` with a result frame whose strings may still be UTF-8 bytes."""
    send_encoded = getattr(sink, "send_encoded", None)
    if send_encoded is not None:
        if not sink.closed:  # a client that went away costs no pack
            body = _result_packer.pack(frame)
            send_encoded(FRAME_HDR.pack(len(body)) + body)
    else:
        sink.send({k: text(v) for k, v in frame.items()})
