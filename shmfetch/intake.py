"""The one way a request enters the daemon: check the URL and the options, build the Job, submit it.

Every front calls it: the Unix socket (fronts/unix.py), the HTTP API (fronts/http.py), the Redis intake
(cluster/intake.py), and any later one. A front reads its own wire format (a msgpack map, a query string,
a stream entry) and answers the errors of that format itself; what a request *is* (a URL within
``options.MAX_URL_CHARS``, options within the config's bounds) is decided here, once, with the same error
codes and messages for every front:

- ``invalid_url``: the URL is refused before it is queued (``options.url_problem``);
- ``bad_request``: an option is unknown or out of range (``options.check``; the message names it).

A crawl request (seeds and rules, docs/CRAWL.md) enters through ``crawl``: its options are checked here
like any request's, its rules by the crawl starter the master injects (shmfetch/crawl), and each page the
crawl then requests comes back through ``take``, like any other request.

The Job then goes to the submit callable the master injects (``Dispatcher.submit``: ``shutting_down``,
``overloaded``, or on through the frontier to a worker). Every answer, a refusal here included, goes out
through ``job.answer``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import FetchConfig
from .job import Job, Sink, answer
from .options import OptionError, check, url_problem
from .protocol import error_frame

# A crawl starter (shmfetch/crawl, injected by the master): (sink, req_id, seeds, rules map, checked options).
# It raises Refused for bad seeds or rules, before anything is queued.
StartCrawl = Callable[..., None]


class Refused(ValueError):
    """A request the intake does not take; ``code`` is its error code, the message says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Intake:
    """Checks requests and submits their jobs. ``submit`` takes a Job and answers it in due course."""

    def __init__(
        self,
        submit: Callable[[Job], None],
        fetch_cfg: FetchConfig | None = None,
        start_crawl: StartCrawl | None = None,
    ):
        self.submit = submit
        self.fetch_cfg = fetch_cfg or FetchConfig()  # the bounds of per-request options
        self.start_crawl = start_crawl  # None: this intake takes no crawls

    def take(
        self,
        sink: Sink,
        req_id: Any,
        url: str,
        options: Any,
        obey_robots: bool = False,
        internal: dict[str, Any] | None = None,
    ) -> Job:
        """Check ``url`` and ``options`` (as the front received them: None, a map, or the OptionError its
        own reading of them raised), build the Job and submit it. Raises Refused (nothing is answered).
        ``obey_robots``: robots.txt decides for this job even without ``[robots] obey`` (a crawl's page).
        ``internal``: ring options of the master's own that no client may send (a crawl's sitemap fetch)."""
        if problem := url_problem(url):
            raise Refused("invalid_url", problem)
        job = Job(sink, req_id, url, self._options(options), obey_robots)
        if internal:
            job.ring_options = {**(job.options or {}), **internal}
        self.submit(job)
        return job

    def _options(self, options: Any) -> dict[str, Any] | None:
        try:
            if isinstance(options, OptionError):
                raise options
            return check(options, self.fetch_cfg)
        except OptionError as e:
            raise Refused("bad_request", str(e)) from None

    def crawl(self, sink: Sink, req_id: Any, seeds: Any, rules: Any, options: Any) -> bool:
        """Start a crawl of ``seeds`` under ``rules`` (a map, docs/CRAWL.md) with per-page ``options``. A
        refusal (a bad seed, rule or option) is answered to ``sink`` at once with an error frame (then
        False); otherwise the crawl answers its pages and its summary in due course."""
        try:
            if self.start_crawl is None:
                raise Refused("bad_request", "this daemon does not take crawls")
            self.start_crawl(sink, req_id, seeds, rules, self._options(options))
        except Refused as e:
            answer(sink, error_frame(req_id, e.code, str(e)))
            return False
        return True

    def request(self, sink: Sink, req_id: Any, url: str, options: Any) -> Job | None:
        """``take``, with a refusal answered to ``sink`` at once (then None)."""
        try:
            return self.take(sink, req_id, url, options)
        except Refused as e:
            answer(sink, error_frame(req_id, e.code, str(e), url=url))
            return None
