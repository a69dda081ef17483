"""Per-host politeness in the master: how many fetches a host may have at once, and how often they start.

The master is the one place every request passes, so limits enforced here hold across all workers.

Protocol (all on the master's event loop thread; ``now`` is ``time.monotonic()``):

    gate.add(item, host, deadline)   park a request for ``host`` (``host_of(url)``) until ``deadline``
    gate.pop_ready(now)              the next request whose host may start a fetch now, or None;
                                     the caller dispatches it at once (its host slot is taken)
    gate.done(host, status, retry_after, final_host, now, answered_at)
                                     that fetch ended (its last request had reached the origin by
                                     ``answered_at``, CLOCK_MONOTONIC): free the slot, pause on 429/503,
                                     count a redirect to another host as a start on that host
    gate.expired(now)                requests whose deadline passed while they waited (answer `timeout`)
    gate.next_wakeup()               when a paused or delayed host becomes ready or a deadline passes:
                                     the caller calls pop_ready/expired again then

A host (``host:port``) may start a fetch when fewer than ``per_host`` of its fetches are in flight, at
least its delay has passed since its last start, and it is not paused.

With a delay, fetches to that host run one at a time. The master sees when it dispatches a fetch, not
when the worker's request leaves (a busy worker may send it a few hundred ms later), so two dispatches
``delay`` apart can reach the origin together. Instead the next fetch waits for the previous one's result,
which carries the time by which its last request had surely reached the origin (``Outcome.answered_at``:
its response headers had arrived), and starts ``delay`` after that. The gap between starts is then at
least ``delay`` as the origin sees it, and the rate is about 1/(delay + time to first byte).
Nutch's ``fetcher.server.delay`` is sequential too (one thread per host queue). The delay is ``[politeness] delay``
raised by robots.txt's ``Crawl-delay`` (``set_crawl_delay``, capped at ``MAX_CRAWL_DELAY``). A 429 or 503
pauses the host for ``Retry-After`` (capped at ``max_retry_after``); without one, or when they repeat, for
``backoff`` x 2^(strikes-1), also capped. A success clears the strikes.

No head-of-line blocking: each host has its own FIFO, and only hosts that may start now sit in ``_ready``
(a deque, served round robin). A host that waits on time sits in a heap keyed by when it may start; a host
at its concurrency cap sits nowhere until ``done`` frees a slot. So a request never waits behind one for
another host, and ``pop_ready`` costs O(1) per request plus O(log hosts) for a timed host.

Redirects: the worker follows redirects itself, so the master learns the final host only with the result.
The fetch holds a slot of the host it started on; a final host that differs gets a start recorded
(``done(final_host=...)``), so the next fetch to it keeps its delay. Its concurrency is not charged: the
hop is over by the time the master knows of it.

Memory: ``hosts`` is bounded. A host whose fetch never reached it because its URL failed the worker's
checks (``UNREACHED_ERRORS``: the SSRF policy, a bad URL) is forgotten as soon as it is idle, so refused
URLs leave nothing behind. Past ``max_hosts`` hosts, the least recently used idle hosts are forgotten (a
host with requests waiting or in flight never is); all they lose is a delay or a pause that has mostly
run out by then.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import urllib.parse
from collections import OrderedDict, deque
from typing import Any

from ..options import split_authority
from ..protocol import PAUSE_CODES

MAX_CRAWL_DELAY = 30.0  # seconds; a longer Crawl-delay is cut to this (Nutch skips such hosts instead)
MAX_HOSTS = 10000  # [politeness] max_hosts
# Errors of a fetch that never connected to its host: the URL failed the worker's checks.
UNREACHED_ERRORS = frozenset(("blocked_address", "invalid_url", "unsupported_scheme"))


def url_authority(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of a URL: scheme lowercased, host without a trailing dot, the default port
    filled in; None when it has no host. The one split behind the gate's host keys and robots' origins.

    The authority ends where urllib3's does (requests connects with urllib3), at the first ``/``, ``?``,
    ``#`` or backslash, so the key names the host a fetch connects to even where urlsplit would read a
    different one (``http://A\\@B/``: urllib3 connects to A; intake refuses such URLs anyway)."""
    split = split_authority(url, "/?#\\")
    return _authority(*split) if split else None


@functools.lru_cache(maxsize=65536)
def _authority(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    # urlsplit costs about as much as the rest of the gate's bookkeeping; a crawl sees the same hosts
    # over and over, so it runs once per (scheme, netloc).
    try:
        u = urllib.parse.urlsplit(f"{scheme}://{netloc}/")
        host = (u.hostname or "").rstrip(".")
        port = u.port or (443 if u.scheme == "https" else 80)
    except (ValueError, AttributeError):
        return None
    return (u.scheme, host, port) if host else None


def host_of(url: str) -> str:
    """``host:port`` of a URL (the default port filled in), or "" when it has none (the worker rejects it)."""
    a = url_authority(url)
    return f"{a[1]}:{a[2]}" if a else ""


class _Host:
    __slots__ = ("key", "active", "next_start", "paused_until", "strikes", "delay", "waiting", "queued")

    def cap(self, per_host: int) -> int:
        return 1 if self.delay > 0 else per_host

    def __init__(self, key: str, delay: float):
        self.key = key
        self.active = 0  # fetches in flight
        self.next_start = 0.0  # monotonic time before which no fetch may start (delay)
        self.paused_until = 0.0  # 429/503 pause
        self.strikes = 0  # 429/503 in a row
        self.delay = delay
        self.waiting: deque[list[Any]] = deque()  # [item, deadline]; item None = expired, skip it
        self.queued = False  # in _ready or in _timed


class Politeness:
    """The per-host admission gate. See the module docstring for the protocol."""

    def __init__(
        self, per_host: int, delay: float, max_retry_after: float, backoff: float, max_hosts: int = MAX_HOSTS
    ):
        self.per_host = per_host
        self.delay = delay
        self.max_retry_after = max_retry_after
        self.backoff = backoff
        self.max_hosts = max_hosts
        self.hosts: OrderedDict[str, _Host] = OrderedDict()  # least recently used first
        self._ready: deque[_Host] = deque()
        self._timed: list[tuple[float, int, _Host]] = []
        self._deadlines: list[tuple[float, int, list[Any]]] = []
        self._seq = itertools.count()
        self.waiting = 0  # requests parked here
        self.paused_total = 0  # times a host was paused by 429/503 (for stats)

    # -- intake ----------------------------------------------------------------------------------------

    def _host(self, key: str) -> _Host:
        h = self.hosts.get(key)
        if h is None:
            h = self.hosts[key] = _Host(key, self.delay)
            if len(self.hosts) > self.max_hosts:
                self._forget_idle(key)
        else:
            self.hosts.move_to_end(key)
        return h

    @staticmethod
    def _idle(h: _Host) -> bool:
        return h.active == 0 and not h.waiting and not h.queued

    def _forget_idle(self, keep: str) -> None:
        """Forget least recently used idle hosts down to ``max_hosts``, but not ``keep`` (the host being
        added); busy ones go to the back."""
        for _ in range(len(self.hosts)):
            if len(self.hosts) <= self.max_hosts:
                return
            key, h = next(iter(self.hosts.items()))
            if key != keep and self._idle(h):
                del self.hosts[key]
            else:
                self.hosts.move_to_end(key)

    def add(self, item: Any, host: str, deadline: float, now: float = 0.0, front: bool = False) -> None:
        """Park ``item`` for ``host``; it comes out of ``pop_ready`` or, after ``deadline``, ``expired``.
        ``front``: ahead of the host's other requests (a retry after a 429/503 pause)."""
        h = self._host(host)
        entry = [item, deadline]
        if front:
            h.waiting.appendleft(entry)
        else:
            h.waiting.append(entry)
        self.waiting += 1
        heapq.heappush(self._deadlines, (deadline, next(self._seq), entry))
        if not h.queued:
            self._requeue(h, now)

    def set_crawl_delay(self, host: str, seconds: float) -> None:
        """robots.txt's Crawl-delay for ``host``: raises its delay (never lowers it below ``delay``)."""
        self._host(host).delay = max(self.delay, min(MAX_CRAWL_DELAY, seconds))

    # -- release -------------------------------------------------------------------------------------

    @staticmethod
    def _ready_at(h: _Host) -> float:
        return h.next_start if h.next_start > h.paused_until else h.paused_until

    def _requeue(self, h: _Host, now: float) -> None:
        """Put a host with waiting requests where it belongs: ready, timed, or (at its cap) nowhere."""
        if not h.waiting or h.active >= h.cap(self.per_host):
            h.queued = False
            return
        h.queued = True
        at = self._ready_at(h)
        if at <= now:
            self._ready.append(h)
        else:
            heapq.heappush(self._timed, (at, next(self._seq), h))

    def _promote(self, now: float) -> None:
        timed = self._timed
        while timed and timed[0][0] <= now:
            h = heapq.heappop(timed)[2]
            h.queued = False
            self._requeue(h, now)

    def pop_ready(self, now: float) -> Any | None:
        """The next request that may start now (its host's slot is taken for it), or None."""
        if self._timed and self._timed[0][0] <= now:
            self._promote(now)
        ready = self._ready
        while ready:
            h = ready.popleft()
            h.queued = False
            waiting = h.waiting
            while waiting and waiting[0][0] is None:  # expired while it waited
                waiting.popleft()
            if not waiting or h.active >= h.cap(self.per_host) or self._ready_at(h) > now:
                self._requeue(h, now)
                continue
            entry = waiting.popleft()
            item = entry[0]
            entry[0] = None  # its deadline entry is now void
            self.waiting -= 1
            h.active += 1
            h.next_start = now + h.delay
            self._requeue(h, now)  # round robin: a host with more waiting goes to the back
            return item
        return None

    def done(
        self,
        host: str,
        status: int | None,
        retry_after: float | None,
        final_host: str,
        now: float,
        answered_at: float | None = None,
        error: str | None = None,
    ) -> None:
        """A fetch started by ``pop_ready`` for ``host`` ended with HTTP ``status`` (or ``error``)."""
        h = self.hosts.get(host)
        if h is None:
            return
        h.active -= 1
        if answered_at is None and error in UNREACHED_ERRORS and h.strikes == 0 and self._idle(h):
            del self.hosts[host]  # it never reached the host: nothing to remember about it
            return
        if h.delay > 0:
            h.next_start = max(h.next_start, min(answered_at or now, now) + h.delay)
        if status in PAUSE_CODES:
            self.pause(h, retry_after, now)
        elif status is not None and status < 500:
            h.strikes = 0
        if final_host and final_host != host:
            f = self._host(final_host)
            f.next_start = max(f.next_start, now + f.delay)
        if not h.queued:
            self._requeue(h, now)

    def pause(self, h: _Host, retry_after: float | None, now: float) -> None:
        h.strikes += 1
        self.paused_total += 1
        backoff = self.backoff * (2 ** min(h.strikes - 1, 30))
        wait = backoff if retry_after is None else max(retry_after, backoff if h.strikes > 1 else 0.0)
        h.paused_until = max(h.paused_until, now + min(wait, self.max_retry_after))

    # -- time ----------------------------------------------------------------------------------------

    def expired(self, now: float) -> list[Any]:
        """Requests whose deadline passed while they waited; they are no longer here."""
        out = []
        dl = self._deadlines
        while dl and dl[0][0] <= now:
            entry = heapq.heappop(dl)[2]
            if entry[0] is not None:
                out.append(entry[0])
                entry[0] = None
                self.waiting -= 1
        return out

    def next_wakeup(self) -> float | None:
        """The earliest time something here changes by itself (a host's wait ends, a deadline passes)."""
        dl = self._deadlines
        while dl and dl[0][2][0] is None:
            heapq.heappop(dl)
        times = [t[0] for t in (self._timed[:1] + dl[:1])]
        return min(times) if times else None

    def drain(self) -> list[Any]:
        """Every parked request, taken out (for shutdown)."""
        out = []
        for h in self.hosts.values():
            out.extend(e[0] for e in h.waiting if e[0] is not None)
            for e in h.waiting:
                e[0] = None
            h.waiting.clear()
        self.waiting = 0
        self._ready.clear()
        self._timed.clear()
        self._deadlines.clear()
        for h in self.hosts.values():
            h.queued = False
        return out

    def stats(self) -> dict[str, int]:
        return {
            "hosts": len(self.hosts),
            "waiting": self.waiting,
            "active": sum(h.active for h in self.hosts.values()),
            "paused": self.paused_total,
        }
