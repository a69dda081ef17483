"""robots.txt in the master (opt-in: ``[robots] obey = true``), parsed with Protego, cached per origin.

Decision per RFC 9309, section 2.3.1:
  * 2xx: parse the first ``MAX_BYTES`` (500 KiB) with Protego (wildcards, ``$``, longest match wins);
  * 4xx, or more than ``MAX_REDIRECTS`` (5) redirects ("unavailable"): allow everything;
  * 5xx, a network error or a timeout ("unreachable"): disallow everything.
A parsed file or a 4xx is cached for ``ttl`` (default 24 h), an unreachable one for ``error_ttl``, in the
master, so every worker sees the same decision. ``Crawl-delay`` for ``user_agent`` is handed to the
politeness gate (capped there at 30 s).

How the master gets the file: in a small thread pool of its own, with ``fetch.Fetcher.fetch_raw``, i.e. the
same SSRF policy (every address and every redirect hop vetted, pinned connections), the same total deadline
and the same caps as a page fetch, and never on the event loop. Not through a worker: a robots.txt is not a
page (no extraction, a truncated prefix instead of ``too_large``), the result ring schema would need a
raw-body variant for a fetch that happens once a day per host, and requests for that host must wait for it
in the master anyway, where the decision is made. The fetch is one per origin at a time: requests that
arrive meanwhile wait in the master (``check`` returns ``WAIT``) and are released together. The robots.txt
fetch itself is not counted against the host's ``per_host`` or delay: it is one request per ``ttl``.

Protocol (event loop thread): ``check(url) -> ALLOW | DENY | WAIT``; on WAIT the caller parks the request
and ``on_ready(origin)`` is called on the loop when the decision for that origin is known.

Memory: at most ``[robots] max_origins`` decisions are kept, least recently used first out (refetched when
needed again). An origin whose robots.txt fetch was refused by the worker's own checks (the SSRF policy:
``blocked_address``) gets no decision at all: the requests that waited for it go on and are refused the
same way, and nothing about that origin is kept.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from protego import Protego

from ..config import FetchConfig, RobotsConfig, SecurityConfig
from .politeness import UNREACHED_ERRORS, url_authority

if TYPE_CHECKING:
    from ..fetch.fetcher import Fetcher

log = logging.getLogger("shmfetch.robots")

MAX_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least 500 KiB; we read exactly that much
MAX_REDIRECTS = 5  # RFC 9309 2.3.1.2: follow at least five
FETCH_THREADS = 4
ALLOW, DENY, WAIT = "allow", "deny", "wait"


def origin_of(url: str) -> str | None:
    """``scheme://host:port`` of an http(s) URL (default port filled in), or None if it has none."""
    a = url_authority(url)
    if a is None or a[0] not in ("http", "https"):
        return None
    scheme, host, port = a
    return f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}"


@dataclasses.dataclass
class Rules:
    """The decision for one origin: a parsed file, allow-all or disallow-all, until ``expires``."""

    parser: Protego | None  # None: ``allow_all`` decides
    allow_all: bool
    expires: float
    crawl_delay: float | None = None
    why: str = ""
    keep: bool = True  # False: release the waiting requests, then forget it (an unreached origin)

    def allows(self, url: str, agent: str) -> bool:
        if self.parser is None:
            return self.allow_all
        return self.parser.can_fetch(url, agent)


def rules_from(status: int | None, body: str, error: str | None, cfg: RobotsConfig, agent: str) -> Rules:
    """RFC 9309's decision for a robots.txt answer (``error`` set: no usable answer)."""
    now = time.monotonic()
    if error == "too_many_redirects":
        return Rules(None, True, now + cfg.ttl, why="more than 5 redirects: unavailable, allow all")
    if error is None or error == "http_status":
        if status is not None and 200 <= status < 300:
            parser = Protego.parse(body)
            delay = parser.crawl_delay(agent)
            return Rules(
                parser, True, now + cfg.ttl, float(delay) if delay else None, why=f"{status}: parsed"
            )
        if status is not None and 400 <= status < 500:
            return Rules(None, True, now + cfg.ttl, why=f"{status}: unavailable, allow all")
    if error in UNREACHED_ERRORS:
        return Rules(None, True, now, why=f"{error}: not fetched; its requests are refused the same way", keep=False)
    why = f"{status or error}: unreachable, disallow all"
    return Rules(None, False, now + cfg.error_ttl, why=why)


class Robots:
    """The per-origin robots.txt cache and its fetches. See the module docstring."""

    def __init__(
        self,
        cfg: RobotsConfig,
        fetch_cfg: FetchConfig,
        security: SecurityConfig,
        call_soon_threadsafe: Callable[..., Any],
    ):
        self.cfg = cfg
        self.agent = cfg.user_agent
        self._fetch_cfg = dataclasses.replace(
            fetch_cfg, timeout=cfg.timeout, max_redirects=MAX_REDIRECTS, retries=0
        )
        self._security = security
        self._call = call_soon_threadsafe
        self._rules: OrderedDict[str, Rules] = OrderedDict()  # least recently used first
        self.max_origins = cfg.max_origins
        self._fetching: set[str] = set()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="robots")
        self.on_ready: Callable[[str, Rules], None] | None = None
        self.denied = 0
        self.fetches = 0

    def check(self, url: str) -> str:
        """ALLOW, DENY, or WAIT (the file is being fetched; ``on_ready(origin)`` follows)."""
        origin = origin_of(url)
        if origin is None:
            return ALLOW  # the worker answers invalid_url / unsupported_scheme
        rules = self._rules.get(origin)
        if rules is not None and (rules.expires > time.monotonic() or not rules.keep):
            self._rules.move_to_end(origin)
            if rules.allows(url, self.agent):
                return ALLOW
            self.denied += 1
            return DENY
        if origin not in self._fetching:
            self._fetching.add(origin)
            self.fetches += 1
            self._pool.submit(self._fetch, origin)
        return WAIT

    def _fetcher(self) -> Fetcher:
        f = getattr(self._local, "fetcher", None)
        if f is None:
            # Imported here: the fetch package pulls in requests, urllib3 and brotli, which a master that
            # does not obey robots.txt never loads. Fetcher without a page step: fetch_raw, no extraction.
            from ..fetch.fetcher import Fetcher

            f = self._local.fetcher = Fetcher(self._fetch_cfg, self._security, answer_pauses=True)
            f.session.headers["Accept"] = "text/plain, */*;q=0.1"
        return f

    def _fetch(self, origin: str) -> None:
        """In a pool thread: fetch and judge ``origin``/robots.txt, then hand the rules to the loop."""
        try:
            out = self._fetcher().fetch_raw(origin + "/robots.txt", MAX_BYTES)
            rules = rules_from(out.status, out.text, out.error, self.cfg, self.agent)
        except Exception as e:  # a bug must not leave the origin's requests waiting forever
            log.exception("robots.txt of %s", origin)
            rules = Rules(None, False, time.monotonic() + self.cfg.error_ttl, why=f"internal error: {e}")
        log.info("robots.txt of %s: %s", origin, rules.why)
        self._call(self._resolved, origin, rules)

    def _resolved(self, origin: str, rules: Rules) -> None:
        self._rules[origin] = rules
        self._rules.move_to_end(origin)
        self._fetching.discard(origin)
        if self.on_ready is not None:
            self.on_ready(origin, rules)
        if not rules.keep:
            del self._rules[origin]
        while len(self._rules) > self.max_origins:
            self._rules.popitem(last=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, int]:
        return {"origins": len(self._rules), "fetches": self.fetches, "denied": self.denied}
