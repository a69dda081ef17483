"""The other end of a ring for tests/test_ipc_ring.py: a separate process that attaches to a ring the test
created and produces or consumes a known stream, with ``SHMFETCH_FAULT`` read at start so that a test can
SIGKILL it at one named step of the ring protocol (shmfetch/ipc/faults.py).

    python -m tests.ring_peer produce NAME COUNT SIZE   put COUNT messages, message(i, SIZE) each
    python -m tests.ring_peer consume NAME COUNT        get COUNT messages, check them, print "ok"
    python -m tests.ring_peer drain NAME                get until RingClosed, print how many were intact

``RING_PEER_SPIN`` in the environment sets ``Ring.poll`` and ``Ring.spin`` (0: sleep as soon as there is
nothing to do).
It creates no shared objects of its own.
"""

from __future__ import annotations

import os
import sys

from shmfetch.ipc import faults
from shmfetch.ipc.ring import Ring, RingClosed


def message(i: int, size: int) -> bytes:
    """Message ``i`` of a stream: its index, then a pattern that depends on it, ``size`` bytes in all."""
    head = i.to_bytes(8, "little")
    body = bytes((i * 31 + j) & 0xFF for j in range(251))
    return (head + body * (size // 251 + 1))[: max(size, 8)]


def index_of(msg: bytes) -> int:
    i = int.from_bytes(msg[:8], "little")
    if msg != message(i, len(msg)):
        raise SystemExit(f"message {i} is corrupt ({len(msg)} bytes)")
    return i


def main(argv: list[str]) -> int:
    faults.arm_from_env()
    mode, name = argv[0], argv[1]
    ring = Ring.attach(name)
    if "RING_PEER_SPIN" in os.environ:
        ring.poll = ring.spin = int(os.environ["RING_PEER_SPIN"])
    try:
        if mode == "produce":
            count, size = int(argv[2]), int(argv[3])
            for i in range(count):
                ring.put(message(i, size), timeout=60)
        elif mode == "consume":
            for want in range(int(argv[2])):
                if index_of(ring.get(timeout=60)) != want:
                    raise SystemExit(f"expected message {want}")
        elif mode == "drain":
            n = 0
            try:
                while True:
                    if index_of(ring.get(timeout=60)) != n:
                        raise SystemExit(f"expected message {n}")
                    n += 1
            except RingClosed:
                print(n)
                return 0
        else:
            raise SystemExit(f"unknown mode {mode}")
        print("ok")
        return 0
    finally:
        ring.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
