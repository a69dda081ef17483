"""One crawl in the master: its queue, level by level, its pages through the one intake path, its answers.

A crawl starts with its seeds at depth 0. Each page it requests is an ordinary Job (``Intake.take``),
whose sink is a ``PageSink``: cache, robots.txt (``obey_robots``), per-host politeness and the workers
treat it like any other request. Its answer comes back to ``Crawl.on_result`` (``take_raw``: the frame as
the dispatcher made it, strings still UTF-8 bytes, so the page's text is never decoded here), which
forwards it to the caller with ``crawl_depth`` and ``referrer`` and queues the page's new links.

Order: level by level. Depth d+1 is requested only once every page of depth d has come back, so the
seen set knows every redirect target of depth d first, and ``max_pages`` keeps the shallowest pages.
Within a level, hosts take turns (round robin), each with at most ``[politeness] per_host`` of the
crawl's requests in flight, and the crawl at most ``[crawl] window`` in all: a crawl takes a share of the
daemon, never its whole queue, so other callers' requests go on beside it.

Bounds: the queue never holds more than ``max_pages`` URLs (a link past that is not kept, and the crawl
ends with ``limit: "max_pages"``), the seen set holds one 60-bit digest per normalized URL (rules.py),
and the verdicts on link spellings are kept for the last ``MET_SPELLINGS`` only.

A caller that goes away stops its crawl: its sink reads closed, so the dispatcher drops its queued pages
(``Dispatcher.pump``) and what was in flight is dropped here on arrival; nothing more is queued.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import Counter, deque
from typing import Any

from ..config import Config
from ..frontier.politeness import host_of
from ..intake import Intake, Refused
from ..job import Sink, answer, text
from ..protocol import OPT_SITEMAP, CrawlSummary
from .rules import HTML_TYPES, Rules, SeenSet, digest, normalized

log = logging.getLogger("shmfetch.crawl")

Item = tuple[str, int, "str | None", int]  # (url, seed index, referrer, digest of its normalized form)
MET_SPELLINGS = 1024  # ~250 KB a crawl at most: a site's navigation links fit
MAX_SITEMAPS = 100  # sitemap documents one crawl reads at most (robots.txt files aside)
SITEMAP_OPTIONS = {"links": True}  # links: never answered from nor stored in the HTTP cache


class PageSink:
    """The sink of one page of a crawl: its answer goes to the crawl, not straight to the caller."""

    __slots__ = ("crawl", "url", "depth", "seed", "referrer", "host")

    def __init__(self, crawl: Crawl, url: str, depth: int, seed: int, referrer: str | None, host: str):
        self.crawl = crawl
        self.url = url
        self.depth = depth
        self.seed = seed
        self.referrer = referrer
        self.host = host

    @property
    def closed(self) -> bool:
        return self.crawl.stopped

    def take_raw(self, frame: dict[str, Any]) -> None:
        self.crawl.on_result(self, frame)

    def send(self, frame: dict[str, Any]) -> None:  # the Sink protocol; job.answer calls take_raw
        self.crawl.on_result(self, frame)


class SitemapSink:
    """The sink of one sitemap fetch of a crawl (a robots.txt for its Sitemap: lines, or a sitemap)."""

    __slots__ = ("crawl", "seed", "kind", "origin", "url")

    def __init__(self, crawl: Crawl, seed: int, kind: str, origin: str, url: str):
        self.crawl = crawl
        self.seed = seed
        self.kind = kind  # "robots" or "xml" (protocol.OPT_SITEMAP)
        self.origin = origin
        self.url = url

    @property
    def closed(self) -> bool:
        return self.crawl.stopped

    def take_raw(self, frame: dict[str, Any]) -> None:
        self.crawl.on_sitemap(self, frame)

    def send(self, frame: dict[str, Any]) -> None:
        self.crawl.on_sitemap(self, frame)


class Crawl:
    """One crawl: see the module docstring."""

    def __init__(self, owner: Crawls, sink: Sink, req_id: Any, rules: Rules, options: dict[str, Any] | None):
        self.owner = owner
        self.client = sink
        self.req_id = req_id
        self.rules = rules
        self.user_links = bool(options and options.get("links"))
        self.page_options = {**(options or {}), "links": True}  # a page whose links the crawl follows
        self.leaf_options = options  # a page of the last depth: its links are not followed
        self.seen = SeenSet()  # digests of normalized URLs (rules.digest)
        # Redirect targets fetched: a URL queued before its page came as a redirect's target is not
        # requested again (level by level, the redirect of depth d is back before depth d+1 starts).
        self.redirected = SeenSet(capacity=16)
        # The link spellings met last (at most MET_SPELLINGS), with (seed, the reason they were not queued,
        # or "duplicates" once queued): a navigation link met on every page costs a dict lookup, not a
        # normalization.
        self.met: dict[str, tuple[int, str]] = {}
        self.level = -1  # the seeds' level, 0, begins at the first _advance
        self.current: dict[str, deque[Item]] = {}  # host -> this level's URLs to request
        self.turns: deque[str] = deque()  # the hosts of ``current``, in turn
        self.next: dict[str, deque[Item]] = {}  # host -> the next level's URLs
        self.queued = 0
        self.inflight = 0
        self.host_inflight: Counter[str] = Counter()
        self.requested = 0
        self.capped = False  # a link was left because max_pages were requested or queued
        self.reached_depth = False  # pages of the last depth were requested
        self.summary = CrawlSummary()
        self.t0 = time.monotonic()
        self.done = False
        self.ending: str | None = None  # "shutting_down": request nothing more, finish once all is back
        self._pumping = False
        self.sitemap_inflight = 0  # level 0 stays open while these are out: their URLs are depth 0
        self.sitemap_urls: set[str] = set()  # the sitemap documents asked for (at most MAX_SITEMAPS)

    @property
    def stopped(self) -> bool:
        return self.done or self.client.closed

    # -- the queue --------------------------------------------------------------------------------------

    def start(self) -> None:
        for i, seed in enumerate(self.rules.seeds):
            self._consider_seed(seed.url, i)
        self._advance()
        if self.rules.sitemaps:
            firsts = {}  # origin -> its first seed
            for i, seed in enumerate(self.rules.seeds):
                firsts.setdefault(seed.origin, i)
            for origin, i in firsts.items():
                self._fetch_sitemap(origin + "/robots.txt", i, "robots", origin)
        self._pump()

    def _consider_seed(self, url: str, seed: int) -> None:
        d = digest(normalized(url))
        if d in self.seen:
            self.summary.duplicates += 1
            return
        self.seen.add(d)
        self._enqueue(url, seed, None, d)

    def _enqueue(self, url: str, seed: int, referrer: str | None, d: int, now: bool = False) -> None:
        """Queue ``url`` for the next level, or (``now``: a sitemap's URL, depth 0) for this one."""
        host = self.owner.host_of(url)
        level = self.current if now else self.next
        q = level.get(host)
        if q is None:
            q = level[host] = deque()
            if now:
                self.turns.append(host)
        q.append((url, seed, referrer, d))
        self.queued += 1

    def _advance(self) -> None:
        """The next level becomes the current one (only once nothing of this level is in flight)."""
        if self.current or self.inflight or self.sitemap_inflight:
            return
        self.level += 1
        self.current, self.next = self.next, {}
        self.turns = deque(self.current)

    def _take(self) -> tuple[str, Item] | None:
        """The next URL of this level: hosts in turn, skipping one with per_host of ours in flight."""
        turns, cap = self.turns, self.owner.per_host
        for _ in range(len(turns)):
            host = turns[0]
            if self.host_inflight[host] >= cap:
                turns.rotate(-1)
                continue
            q = self.current[host]
            item = q.popleft()
            self.queued -= 1
            if q:
                turns.rotate(-1)
            else:
                turns.popleft()
                del self.current[host]
            return host, item
        return None

    def _pump(self) -> None:
        """Request what may go now; finish when nothing is left. Re-entrant calls (a page answered at once,
        inside ``take``) leave the work to the outer loop."""
        if self._pumping or self.done:
            return
        self._pumping = True
        try:
            window = self.owner.window
            while (
                not self.stopped and self.ending is None and self.inflight < window
                and self.requested < self.rules.max_pages
            ):  # fmt: skip
                got = self._take()
                if got is None:
                    if self.current or self.inflight or self.sitemap_inflight or not self.next:
                        break
                    self._advance()
                    continue
                if got[1][3] in self.redirected:  # a redirect of this level's led there: fetched
                    self.summary.duplicates += 1
                    continue
                self._request(*got)
        finally:
            self._pumping = False
        if not self.inflight and not self.sitemap_inflight and not self.stopped:
            self._finish(self.ending)

    def _request(self, host: str, item: Item) -> None:
        url, seed, referrer, _ = item
        depth = self.level
        last = depth >= self.rules.depth
        self.reached_depth |= last
        sink = PageSink(self, url, depth, seed, referrer, host)
        self.inflight += 1
        self.host_inflight[host] += 1
        self.requested += 1
        try:
            self.owner.intake.take(
                sink, self.req_id, url, self.leaf_options if last else self.page_options, self.rules.robots
            )
        except Refused:  # links are checked before they are queued; a seed was checked at the start
            self._settle(sink)
            self.requested -= 1
            self.summary.out_of_scope += 1

    def _settle(self, page: PageSink) -> None:
        self.inflight -= 1
        self.host_inflight[page.host] -= 1
        if not self.host_inflight[page.host]:
            del self.host_inflight[page.host]

    # -- results ----------------------------------------------------------------------------------------

    def on_result(self, page: PageSink, frame: dict[str, Any]) -> None:
        """A page's answer (its strings may still be UTF-8 bytes): forward it, count it, queue its links."""
        if self.done:
            return
        self._settle(page)
        if self.client.closed:  # the caller went away: stop, answer nothing
            self._stop()
            return
        error = text(frame.get("error"))
        if error in ("robots_denied", "shutting_down"):  # nothing asked of the site: no result line
            self.requested -= 1
            if error == "robots_denied":
                self.summary.robots_denied += 1
            else:  # the daemon stops: request nothing more, deliver what is in flight, then the summary
                self.ending = "shutting_down"
        else:
            self._deliver(page, frame)
        self._pump()

    def _deliver(self, page: PageSink, frame: dict[str, Any]) -> None:
        s = self.summary
        if frame["ok"]:
            s.ok += 1
        else:
            s.failed += 1
        final = text(frame.get("final_url")) or ""
        if final and final != page.url:  # a redirect target is seen too, and fetched
            d = digest(normalized(final))
            self.seen.add(d)
            self.redirected.add(d)
        links = frame.get("links") if page.depth < self.rules.depth else None
        if not self.user_links:
            frame["links"] = frame["links_truncated"] = None
        frame["crawl_depth"] = page.depth
        frame["referrer"] = page.referrer
        answer(self.client, frame)
        if links and final and text(frame.get("content_type")) in HTML_TYPES:
            if self.rules.in_scope(final, page.seed):  # a redirect out of scope: its links are not followed
                self._expand(links, page.seed, final)

    def _expand(self, links: list[Any], seed: int, referrer: str) -> None:
        for link in links:
            url = link.get(b"url") if b"url" in link else link.get("url")
            if type(url) is bytes:
                url = url.decode("utf-8", "replace")
            if not isinstance(url, str):
                continue
            if self.queued >= self.rules.max_pages:  # the queue's bound: see the module docstring
                self.capped = True
                return
            self._consider(url, seed, referrer)

    def _judge(self, url: str, seed: int) -> str | int:
        """Why ``url`` is not queued (a CrawlSummary count's name), or the digest of its normalized URL,
        now in the seen set: queue it. Normalizing costs 10-25 us, so it comes last."""
        rules = self.rules
        if not rules.in_scope(url, seed):
            return "out_of_scope"
        if rules.not_page(url):
            return "not_page"
        canonical = normalized(url)
        if not rules.wanted(canonical):
            return "excluded"
        d = digest(canonical)
        if d in self.seen:
            return "duplicates"
        self.seen.add(d)
        return d

    def _consider(self, url: str, seed: int, referrer: str, now: bool = False) -> None:
        """Queue ``url`` for the next level, or count why not (CrawlSummary's order of reasons)."""
        s = self.summary
        if self.queued >= self.rules.max_pages:
            self.capped = True
            return
        met = self.met.get(url)
        if met is not None and (met[0] == seed or met[1] == "duplicates"):  # this spelling was judged
            setattr(s, met[1], getattr(s, met[1]) + 1)
            return
        verdict = self._judge(url, seed)
        if len(self.met) >= MET_SPELLINGS:
            del self.met[next(iter(self.met))]  # the oldest first out
        if isinstance(verdict, str):
            self.met[url] = (seed, verdict)
            setattr(s, verdict, getattr(s, verdict) + 1)
            return
        self.met[url] = (seed, "duplicates")  # queued now: a duplicate when met again
        self._enqueue(url, seed, referrer, verdict, now)

    # -- sitemaps ---------------------------------------------------------------------------------------

    def _fetch_sitemap(self, url: str, seed: int, kind: str, origin: str) -> None:
        """Ask a worker to read a robots.txt's Sitemap: lines or a sitemap (the same policy as any page;
        robots.txt decides for a sitemap, not for robots.txt itself)."""
        if url in self.sitemap_urls or len(self.sitemap_urls) >= MAX_SITEMAPS:
            return
        self.sitemap_urls.add(url)
        sink = SitemapSink(self, seed, kind, origin, url)
        self.sitemap_inflight += 1
        try:
            self.owner.intake.take(
                sink,
                self.req_id,
                url,
                SITEMAP_OPTIONS,
                kind == "xml" and self.rules.robots,
                {OPT_SITEMAP: kind},
            )
        except Refused:
            self.sitemap_inflight -= 1

    def on_sitemap(self, sink: SitemapSink, frame: dict[str, Any]) -> None:
        """A sitemap fetch came back: read more sitemaps, queue its pages at depth 0."""
        if self.done:
            return
        self.sitemap_inflight -= 1
        if self.client.closed:
            self._stop()
            return
        if text(frame.get("error")) == "shutting_down":
            self.ending = "shutting_down"
        entries = text(frame.get("links")) if frame.get("ok") else None
        if sink.kind == "xml" and entries is not None:
            self.summary.sitemaps += 1
        entries = entries or []
        sitemaps = [e["url"] for e in entries if e.get("sitemap")]
        if sink.kind == "robots" and not sitemaps:
            sitemaps = [sink.origin + "/sitemap.xml"]  # no Sitemap: line (or no robots.txt): the usual place
        for url in sitemaps:
            self._fetch_sitemap(url, sink.seed, "xml", sink.origin)
        for e in entries:
            if not e.get("sitemap"):
                self._consider(e["url"], sink.seed, sink.url, now=self.level == 0)
        self._pump()

    # -- the end ----------------------------------------------------------------------------------------

    def _finish(self, limit: str | None = None) -> None:
        """Send the summary (the crawl's last answer) and forget the queue."""
        if self.done:
            return
        if limit is None:
            if self.capped or self.queued:
                limit = "max_pages"
            elif self.reached_depth:
                limit = "depth"
        s = self.summary
        s.limit = limit
        s.elapsed_s = round(time.monotonic() - self.t0, 3)
        self._stop()
        answer(self.client, {"id": self.req_id, "ok": True, "summary": s.to_dict()})

    def _stop(self) -> None:
        self.done = True
        self.current.clear()
        self.next.clear()
        self.turns.clear()
        self.queued = 0
        self.owner.active.discard(self)


class Crawls:
    """The crawls of this master: ``start`` is the intake's crawl starter (``Intake.start_crawl``)."""

    def __init__(self, cfg: Config, intake: Intake):
        self.cfg = cfg.crawl
        self.intake = intake
        self.per_host = cfg.politeness.per_host
        self.window = cfg.crawl.window
        self.host_of = host_of
        # Weak: a crawl whose caller went away is kept alive only by its jobs still in the daemon.
        self.active: weakref.WeakSet[Crawl] = weakref.WeakSet()
        self.started = 0

    def start(self, sink: Sink, req_id: Any, seeds: Any, rules: Any, options: dict[str, Any] | None) -> None:
        """Check the rules (``Refused`` before anything is queued) and start the crawl."""
        crawl = Crawl(self, sink, req_id, Rules(seeds, rules, self.cfg), options)
        self.active.add(crawl)
        self.started += 1
        log.info("crawl %r: %d seed(s), depth %d, max_pages %d, scope %s", req_id, len(crawl.rules.seeds),
                 crawl.rules.depth, crawl.rules.max_pages, crawl.rules.scope)  # fmt: skip
        crawl.start()

    def stats(self) -> dict[str, int]:
        return {"active": len(self.active), "started": self.started}
