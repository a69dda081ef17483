"""A crawl's rules, checked once before anything is queued; its scope test; its seen set.

A crawl request carries seeds and a map of rules (docs/CRAWL.md):

    depth      int >= 0, link hops from a seed            default [crawl] depth
    max_pages  int, 1 .. [crawl] max_pages_limit          default [crawl] max_pages
    scope      "host" | "domain" | "prefix" | "any"       default [crawl] scope
    include    [regex, ...]: a link must match one         (over the normalized URL, ``re.search``)
    exclude    [regex, ...]: a link must match none
    robots     bool: obey robots.txt                      default [crawl] obey_robots
    sitemaps   bool: also seed from the seeds' sitemaps      default false

Every problem is a ``Refused`` naming the rule: a bad seed is ``invalid_url``, anything else
``bad_request``. Regexes are compiled here, once per crawl.

URLs are compared by ``w3lib.url.canonicalize_url`` (Scrapy's normalizer: scheme and host lowercased, the
fragment dropped, query arguments sorted, percent-encoding normalized), with an explicit default port
dropped (``normalized``). The seen set keeps a 60-bit BLAKE2b digest of each normalized URL, never the
URL, in a ``SeenSet``: 16-32 bytes a URL (tools/bench_crawl.py measures it).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import urllib.parse
from array import array
from dataclasses import dataclass
from typing import Any

from w3lib.url import canonicalize_url

from ..config import SCOPES, CrawlConfig
from ..frontier.politeness import url_authority
from ..frontier.robots import origin_of
from ..intake import Refused
from ..options import url_problem

RULE_NAMES = ("depth", "max_pages", "scope", "include", "exclude", "robots", "sitemaps")
MAX_SEEDS = 1000
MAX_PATTERNS = 100  # include and exclude patterns each
MAX_PATTERN_CHARS = 1000
HTML_TYPES = frozenset(("text/html", "application/xhtml+xml"))  # pages whose links a crawl follows


@functools.lru_cache(maxsize=1)
def _suffix_list() -> Any:
    # publicsuffixlist ships its snapshot of the Public Suffix List: nothing is fetched. Loaded once, when a
    # domain-scoped crawl first needs it (about 0.1 s).
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@functools.lru_cache(maxsize=65536)
def registrable_domain(host: str) -> str:
    """The registrable domain of ``host`` by the Public Suffix List (``a.b.example.co.uk`` ->
    ``example.co.uk``); an IP address, or a name with no registrable part (``localhost``, ``co.uk``),
    is its own."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    return _suffix_list().privatesuffix(host) or host


def digest(url: str) -> int:
    """The seen set's key of a URL string: 60 bits of BLAKE2b (collisions: ~1 in 2 million at 1 million
    URLs; an int of 60 bits is the smallest Python int over 30 bits)."""
    return int.from_bytes(hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=8).digest()) >> 4


DEFAULT_PORTS = {"http": 80, "https": 443}


def normalized(url: str) -> str:
    """``url`` normalized: ``canonicalize_url``, and an explicit default port dropped (w3lib keeps it)."""
    canonical = canonicalize_url(url)
    if ":80" in canonical or ":443" in canonical:  # the cheap test first: most URLs name no port
        parts = urllib.parse.urlsplit(canonical)
        port = f":{parts.port}"
        if parts.port == DEFAULT_PORTS.get(parts.scheme) and parts.netloc.endswith(port):
            canonical = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc[: -len(port)]))
    return canonical


class SeenSet:
    """The digests of a crawl's normalized URLs: open addressing (linear probing) over one array of 64-bit
    slots, at most half full, 16-32 bytes a URL. A Python set of ints costs ~80 (a 32-byte int object per
    digest plus the table); the probing in Python costs ~1 us, against the 10-25 us of normalizing."""

    __slots__ = ("_slots", "_mask", "_count")

    def __init__(self, capacity: int = 1024):
        size = 1 << max(4, (2 * capacity - 1).bit_length())
        self._slots = array("Q", bytes(8 * size))
        self._mask = size - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, d: int) -> bool:
        key = d + 1  # 0 marks an empty slot; a digest is under 2**60
        slots, mask = self._slots, self._mask
        i = key & mask
        while (v := slots[i]) != 0:
            if v == key:
                return True
            i = (i + 1) & mask
        return False

    def add(self, d: int) -> None:
        if 2 * (self._count + 1) > len(self._slots):
            self._grow()
        key = d + 1
        slots, mask = self._slots, self._mask
        i = key & mask
        while (v := slots[i]) != 0:
            if v == key:
                return
            i = (i + 1) & mask
        slots[i] = key
        self._count += 1

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = len(self._slots) - 1
        self._count = 0
        for key in old:
            if key:
                self.add(key - 1)

    @property
    def nbytes(self) -> int:
        return len(self._slots) * 8


@dataclass(frozen=True)
class Seed:
    """One seed and what its scope compares: (host, port), the registrable domain, the path prefix."""

    url: str
    host: str
    port: int
    domain: str
    origin: str  # scheme://host:port (robots.origin_of)
    prefix: str  # the origin + the path up to its last "/"


def _seed(url: Any) -> Seed:
    if not isinstance(url, str) or not url:
        raise Refused("invalid_url", f"seed {url!r}: not a URL")
    if problem := url_problem(url):
        raise Refused("invalid_url", f"seed {url[:100]!r}: {problem}")
    a = url_authority(url)
    if a is None or a[0] not in ("http", "https"):
        raise Refused("invalid_url", f"seed {url[:100]!r}: not an http(s) URL with a host")
    _, host, port = a
    origin = origin_of(url) or ""
    path = urllib.parse.urlsplit(url).path or "/"
    return Seed(url, host, port, registrable_domain(host), origin, origin + path[: path.rfind("/") + 1])


def _int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise Refused("bad_request", f"crawl rule {name!r} must be an integer, not {v!r}")
    if not lo <= v <= hi:
        raise Refused("bad_request", f"crawl rule {name!r} = {v}: must be between {lo} and {hi}")
    return v


def _patterns(name: str, v: Any) -> tuple[re.Pattern[str], ...]:
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list | tuple) or len(items) > MAX_PATTERNS:
        raise Refused("bad_request", f"crawl rule {name!r} must be a list of at most {MAX_PATTERNS} regexes")
    out = []
    for p in items:
        if not isinstance(p, str) or len(p) > MAX_PATTERN_CHARS:
            raise Refused(
                "bad_request",
                f"crawl rule {name!r}: {p!r} is not a regex of at most {MAX_PATTERN_CHARS} characters",
            )
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise Refused("bad_request", f"crawl rule {name!r}: bad regex {p!r}: {e}") from None
    return tuple(out)


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise Refused("bad_request", f"crawl rule {name!r} must be true or false, not {v!r}")
    return v


class Rules:
    """A checked crawl request: its seeds and rules, and the tests its links go through."""

    def __init__(self, seeds: Any, raw: Any, cfg: CrawlConfig):
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise Refused("bad_request", "'crawl' must be a map of rules")
        if unknown := sorted(str(k) for k in raw if k not in RULE_NAMES):
            raise Refused(
                "bad_request", f"unknown crawl rule {unknown[0]!r} (known: {', '.join(RULE_NAMES)})"
            )
        if not isinstance(seeds, list | tuple) or not seeds:
            raise Refused("bad_request", "a crawl needs at least one seed URL")
        if len(seeds) > MAX_SEEDS:
            raise Refused("bad_request", f"at most {MAX_SEEDS} seeds")
        self.seeds = [_seed(s) for s in seeds]
        self.depth = _int("depth", raw.get("depth", cfg.depth), 0, 1000)
        self.max_pages = _int("max_pages", raw.get("max_pages", cfg.max_pages), 1, cfg.max_pages_limit)
        self.scope = raw.get("scope", cfg.scope)
        if self.scope not in SCOPES:
            raise Refused(
                "bad_request", f"crawl rule 'scope' = {self.scope!r}: must be one of {', '.join(SCOPES)}"
            )
        self.include = _patterns("include", raw.get("include"))
        self.exclude = _patterns("exclude", raw.get("exclude"))
        self.robots = _bool("robots", raw.get("robots", cfg.obey_robots))
        self.sitemaps = _bool("sitemaps", raw.get("sitemaps", False))
        self.non_page = frozenset(e.lower().lstrip(".") for e in cfg.non_page_extensions)

    def in_scope(self, url: str, seed: int) -> bool:
        """Whether ``url`` is an http(s) URL every front would take, within the scope of seed ``seed``."""
        a = url_authority(url)
        if a is None or a[0] not in ("http", "https") or url_problem(url):
            return False
        scope = self.scope
        if scope == "any":
            return True
        s = self.seeds[seed]
        if scope == "host":
            return a[1] == s.host and a[2] == s.port
        if scope == "domain":
            return registrable_domain(a[1]) == s.domain
        path = urllib.parse.urlsplit(url).path or "/"
        return f"{origin_of(url)}{path}".startswith(s.prefix)

    def not_page(self, url: str) -> bool:
        """Whether ``url``'s extension says it is no page, and no ``include`` pattern asks for it."""
        path = urllib.parse.urlsplit(url).path
        name = path[path.rfind("/") + 1 :]
        dot = name.rfind(".")
        if dot < 0 or name[dot + 1 :].lower() not in self.non_page:
            return False
        return not (self.include and any(p.search(normalized(url)) for p in self.include))

    def wanted(self, canonical: str) -> bool:
        """``include`` (one must match, if any are given) and ``exclude`` (none may), over the normalized
        URL."""
        if self.include and not any(p.search(canonical) for p in self.include):
            return False
        return not any(p.search(canonical) for p in self.exclude)
