"""The Python ring (shmfetch/ipc/ring.py) and the C ring (native_bench/ring.h) against each other.

Both implement docs/RING.md; here each produces a deterministic stream the other consumes and checks byte
for byte, on rings small enough that records wrap around the data area and big messages are cut into
fragments. The msgpack cases prove the request format too: C hand-encodes ``[ticket, url, nil]`` for
``msgpack.unpackb``, and parses what ``msgpack.packb`` makes.

The C side is built with make; a missing compiler is a failure, not a skip (CI has gcc).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import posix_ipc
import pytest

from shmfetch.ipc.ring import FLAG_MORE, REC_HDR, Ring, RingClosed

from .helpers import MEMBARRIER

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native_bench"
TIMEOUT = 120  # seconds for any one C process; the whole module runs in a few seconds

_n = iter(range(1_000_000))
_M64 = (1 << 64) - 1
_SIZE_CLASS = (16, 300, 5000, 70000)
_ALPHA = b"abcdefghijklmnopqrstuvwxyz0123456789-_./"

# (nslots, slot_size): the tiny ring forces wrap-around and fragments of 120 bytes; the middle one has
# fragments of 4088 bytes; the last is the daemon's request-ring geometry.
GEOMETRIES = [(8, 64), (64, 256), (1024, 256)]


def _name() -> str:
    return f"/shmfetch_itest.{os.getpid()}.{next(_n)}"


@pytest.fixture(scope="module")
def interop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build native_bench into a private directory and return the interop binary."""
    build = tmp_path_factory.mktemp("native_build")
    proc = subprocess.run(
        ["make", "-C", str(NATIVE), f"BUILD={build}"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"make failed (CI has gcc and make):\n{proc.stdout}\n{proc.stderr}"
    exe = build / "interop"
    assert exe.is_file()
    return exe


# -- the generator, mirrored from native_bench/interop.c ---------------------------------------------------


def _splitmix(state: list[int]) -> int:
    state[0] = (state[0] + 0x9E3779B97F4A7C15) & _M64
    z = state[0]
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def records(count: int, seed: int) -> Iterator[bytes]:
    """The stream ``interop produce/consume COUNT SEED`` writes and expects."""
    s = [seed]
    for i in range(count):
        a, b = _splitmix(s), _splitmix(s)
        n = (a >> 8) % _SIZE_CLASS[a & 3]
        base, step = b & 0xFF, ((b >> 8) | 1) & 0xFF
        pat = bytes((base + j * step) & 0xFF for j in range(251))
        buf = bytearray((pat * (n // 251 + 1))[:n])
        head = i.to_bytes(4, "little")[: min(n, 4)]
        buf[: len(head)] = head
        yield bytes(buf)


def requests(count: int, seed: int) -> Iterator[tuple[int, str]]:
    """The (ticket, url) pairs ``interop produce-msgpack/consume-msgpack COUNT SEED`` uses."""
    s = [seed]
    for i in range(count):
        ticket = _splitmix(s)
        n = 20 + _splitmix(s) % 980
        url = bytearray(f"http://example.test/{i}/".encode()[:n])
        while len(url) < n:
            url.append(_ALPHA[_splitmix(s) % len(_ALPHA)])
        yield ticket, url.decode()


# -- helpers -------------------------------------------------------------------------------------------------


def _run_c(exe: Path, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(exe), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen[str]) -> None:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}: {err.strip()}"


@pytest.fixture(params=[MEMBARRIER, "fence"])
def make_ring(request: pytest.FixtureRequest) -> Iterator:
    """Rings in both barrier modes (docs/RING.md, "Fences"); the C side follows the creator's flag."""
    made: list[Ring] = []

    def make(nslots: int, slot_size: int) -> Ring:
        r = Ring.create(_name(), nslots, slot_size, barrier=request.param)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
        r.unlink()


def _consume_in_python(ring: Ring, proc: subprocess.Popen[str], expected: Iterator, check) -> None:
    """Consume alongside the C producer; if it dies, wake ourselves with close so we never hang."""

    def watch() -> None:
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        ring.close_wake()  # after the C producer is gone: a no-op for a finished stream, a wake-up otherwise

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        for i, want in enumerate(expected):
            try:
                got = ring.get(timeout=TIMEOUT)
            except RingClosed:
                pytest.fail(f"C producer stopped before record {i}: {proc.stderr.read().strip()}")
            check(i, got, want)
    finally:
        t.join(TIMEOUT + 5)
    _finish(proc)


# -- tests ---------------------------------------------------------------------------------------------------


def test_generator_covers_fragments_and_wrap() -> None:
    """The stream really exercises the cases: empty, multi-slot, and larger than a tiny ring's fragment."""
    sizes = [len(r) for r in records(300, 1)]
    max_fragment_tiny = 8 * 64 // 4 - REC_HDR.size
    assert 0 in sizes
    assert any(64 < n <= max_fragment_tiny for n in sizes)
    assert sum(n > 20 * max_fragment_tiny for n in sizes) > 20


@pytest.mark.parametrize("nslots,slot_size", GEOMETRIES)
def test_c_produces_python_consumes(interop: Path, make_ring, nslots: int, slot_size: int) -> None:
    ring = make_ring(nslots, slot_size)
    count, seed = 300, 1000 + nslots
    proc = _run_c(interop, "produce", ring.name, count, seed)

    def check(i: int, got: bytes, want: bytes) -> None:
        assert got == want, f"record {i}: {len(got)} bytes, want {len(want)}"

    _consume_in_python(ring, proc, records(count, seed), check)
    head, tail = ring.positions()
    assert head == tail  # every slot the C side published was released by Python


@pytest.mark.parametrize("nslots,slot_size", GEOMETRIES)
def test_python_produces_c_consumes(interop: Path, make_ring, nslots: int, slot_size: int) -> None:
    ring = make_ring(nslots, slot_size)
    count, seed = 300, 2000 + nslots
    proc = _run_c(interop, "consume", ring.name, count, seed)
    try:
        for rec in records(count, seed):
            ring.put(rec, timeout=TIMEOUT)  # a dead consumer turns into BusyError, not a hang
    except BaseException:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    _finish(proc)
    assert ring.positions()[0] == ring.positions()[1]


@pytest.mark.slow
@pytest.mark.parametrize("nslots,slot_size", [(8, 64), (1024, 256)])
def test_c_msgpack_requests_decode_in_python(interop: Path, make_ring, nslots: int, slot_size: int) -> None:
    ring = make_ring(nslots, slot_size)
    count, seed = 500, 3000 + nslots
    proc = _run_c(interop, "produce-msgpack", ring.name, count, seed)

    def check(i: int, got: bytes, want: tuple[int, str]) -> None:
        assert msgpack.unpackb(got) == [want[0], want[1], None], f"request {i}"

    _consume_in_python(ring, proc, requests(count, seed), check)


@pytest.mark.slow
@pytest.mark.parametrize("nslots,slot_size", [(8, 64), (1024, 256)])
def test_python_msgpack_requests_parse_in_c(interop: Path, make_ring, nslots: int, slot_size: int) -> None:
    ring = make_ring(nslots, slot_size)
    count, seed = 500, 4000 + nslots
    proc = _run_c(interop, "consume-msgpack", ring.name, count, seed)
    for ticket, url in requests(count, seed):
        ring.put(msgpack.packb([ticket, url, None]), timeout=TIMEOUT)
    _finish(proc)


def test_c_consumer_detects_a_corrupted_record(interop: Path, make_ring) -> None:
    """The verifier is not vacuous: one flipped payload byte makes the C consumer fail."""
    ring = make_ring(64, 256)
    count, seed = 20, 77
    proc = _run_c(interop, "consume", ring.name, count, seed)
    recs = list(records(count, seed))
    bad = next(i for i, r in enumerate(recs) if len(r) > 8)
    try:
        for i, rec in enumerate(recs):
            if i == bad:
                rec = rec[:-1] + bytes([rec[-1] ^ 0xFF])
            while True:  # the consumer stops at the bad record, so the ring may fill up behind it
                try:
                    ring.put(rec, timeout=0.2)
                    break
                except posix_ipc.BusyError:
                    if proc.poll() is not None:
                        break
            if proc.poll() is not None:
                break
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 1 and f"record {bad}" in err


def test_close_wake_from_c_stops_python_consumer(interop: Path, make_ring) -> None:
    """The C close wake-up (CLOSED flag, one fill post) is seen by Python after it drains."""
    ring = make_ring(8, 64)
    ring.put(b"last", timeout=5)
    _finish(_run_c(interop, "close", ring.name))
    assert ring.closed
    assert ring.get(timeout=5) == b"last"
    with pytest.raises(RingClosed):
        ring.get(timeout=5)


def test_c_consumer_drains_to_close_and_drops_a_partial_message(interop: Path, make_ring) -> None:
    """Protocol v2 across implementations: the C consumer sleeps on an empty ring, is woken by Python's head
    stores, and at close stops after exactly the committed messages. The last message had only its first
    fragment published, the state a producer SIGKILLed between fragments leaves (tests/test_ipc_ring.py kills
    a real one); the C side must drop it, not deliver it and not wait for the rest."""
    ring = make_ring(8, 64)
    count, seed = 40, 5000
    proc = _run_c(interop, "drain", ring.name, count, seed)
    try:
        for rec in records(count, seed):
            ring.put(rec, timeout=TIMEOUT)
        first = b"\x01" * ring.max_fragment  # one fragment of a longer message, flagged MORE
        ring._publish(ring._write_record(first, len(first), FLAG_MORE, TIMEOUT))
        ring.close_wake()
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    _finish(proc)
    head, tail = ring.positions()
    assert head == tail  # the C consumer read the fragment's slots too, then dropped it
