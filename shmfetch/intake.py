"""The one way a request enters the daemon: check the URL and the options, build the Job, submit it.

Every front calls it: the Unix socket (fronts/unix.py), the HTTP API (fronts/http.py), the Redis intake
(cluster/intake.py), and any later one. A front reads its own wire format (a msgpack map, a query string,
a stream entry) and answers the errors of that format itself; what a request *is* (a URL within
``options.MAX_URL_CHARS``, options within the config's bounds) is decided here, once, with the same error
codes and messages for every front:

- ``invalid_url``: the URL is refused before it is queued (``options.url_problem``);
- ``bad_request``: an option is unknown or out of range (``options.check``; the message names it).

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


class Refused(ValueError):
    """A request the intake does not take; ``code`` is its error code, the message says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Intake:
    """Checks requests and submits their jobs. ``submit`` takes a Job and answers it in due course."""

    def __init__(self, submit: Callable[[Job], None], fetch_cfg: FetchConfig | None = None):
        self.submit = submit
        self.fetch_cfg = fetch_cfg or FetchConfig()  # the bounds of per-request options

    def take(self, sink: Sink, req_id: Any, url: str, options: Any) -> Job:
        """Check ``url`` and ``options`` (as the front received them: None, a map, or the OptionError its
        own reading of them raised), build the Job and submit it. Raises Refused (nothing is answered)."""
        if problem := url_problem(url):
            raise Refused("invalid_url", problem)
        try:
            if isinstance(options, OptionError):
                raise options
            checked = check(options, self.fetch_cfg)
        except OptionError as e:
            raise Refused("bad_request", str(e)) from None
        job = Job(sink, req_id, url, checked)
        self.submit(job)
        return job

    def request(self, sink: Sink, req_id: Any, url: str, options: Any) -> Job | None:
        """``take``, with a refusal answered to ``sink`` at once (then None)."""
        try:
            return self.take(sink, req_id, url, options)
        except Refused as e:
            answer(sink, error_frame(req_id, e.code, str(e), url=url))
            return None
