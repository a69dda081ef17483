"""Per-request options: their names, types and bounds, checked once, in the master.

A client sends them as a map beside the URL (``{"id", "url", "options": {...}}`` on the socket, query
parameters on the HTTP API); the master checks them here and forwards the map as given in the request
ring message (``[ticket, url, options]``, docs/RING.md). The worker fills in the config's defaults for the
options a request left out (``effective``), so a request without options costs no extra ring bytes.

    mode             "text" | "main" | "markdown"        default [fetch] mode
    metadata         bool: also ``published``            default [fetch] metadata
    links            bool: return the page's links       default false
    timeout          seconds, > 0, at most [fetch] timeout
    accept_language  an Accept-Language header value (printable ASCII, at most 256 characters)
    max_bytes        bytes, >= 1, at most [fetch] max_bytes

An unknown name or a value of the wrong type or out of range raises ``OptionError``; the master answers
``bad_request`` with a message naming the option.

The master's frontier (frontier/admission.py) adds options of its own to the same map before dispatch:
``if_none_match`` / ``if_modified_since`` (revalidate a cached entry); a crawl adds ``sitemap`` to its
sitemap fetches (the intake's ``internal``). ``check`` refuses them from clients: they are unknown names
there. (429/503 are answered at once by every daemon worker, whose
master pauses the host: a property of the worker's Fetcher, not of a request.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import BOOL_WORDS, MODES, FetchConfig
from .protocol import OPT_IF_MODIFIED_SINCE, OPT_IF_NONE_MATCH, OPT_SITEMAP

NAMES = ("mode", "metadata", "links", "timeout", "accept_language", "max_bytes")
MAX_ACCEPT_LANGUAGE = 256


MAX_URL_CHARS = 8192


def url_problem(url: str) -> str | None:
    """Why every interface refuses ``url`` before it is queued (error ``invalid_url``), or None."""
    if len(url) > MAX_URL_CHARS:
        return f"URL longer than {MAX_URL_CHARS} characters"
    if "\\" in (split_authority(url) or ("", ""))[1]:
        # urllib3 (what requests connects with) ends the authority at a backslash, urlsplit does not:
        # in http://A\@B/ one sees host A, the other host B, so robots.txt and politeness would judge
        # another host than the one fetched.
        return "backslash in the URL's authority"
    return None


def split_authority(url: str, ends: str = "/?#") -> tuple[str, str] | None:
    """``(scheme, authority)`` of ``url``: the authority runs from ``://`` to the first of ``ends`` (by
    default where urlsplit ends it); None without ``://``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = len(rest)
    for ch in ends:
        i = rest.find(ch, 0, end)
        if i != -1:
            end = i
    return scheme, rest[:end]


class OptionError(ValueError):
    """A request option is unknown or out of range; the message names it."""


@dataclass(frozen=True)
class Options:
    """The options in force for one request (the request's own, else the config's)."""

    mode: str
    metadata: bool
    links: bool
    timeout: float
    accept_language: str | None
    max_bytes: int
    if_none_match: str | None = None
    if_modified_since: str | None = None
    sitemap: str | None = None  # a crawl's sitemap fetch: "robots" or "xml" (protocol.OPT_SITEMAP)


def _bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        if not v:
            return True  # "?links" alone in a query means true
        if (b := BOOL_WORDS.get(v.strip().lower())) is not None:
            return b
    raise OptionError(f"option {name!r} must be a boolean, not {v!r}")


def _number(name: str, v: Any, kind: type, hi: float) -> Any:
    if isinstance(v, str):
        try:
            v = kind(v)
        except ValueError:
            raise OptionError(f"option {name!r} must be a number, not {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
        raise OptionError(f"option {name!r} must be a number, not {v!r}")
    if kind is int and v != int(v):
        raise OptionError(f"option {name!r} must be an integer, not {v!r}")
    if not 0 < v <= hi:
        raise OptionError(f"option {name!r} = {v!r} is out of range: more than 0, at most the config's {hi}")
    return kind(v)


def check(raw: Any, cfg: FetchConfig) -> dict[str, Any] | None:
    """The request's options, typed and checked against ``cfg``'s bounds; None when there are none."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise OptionError("'options' must be a map")
    out: dict[str, Any] = {}
    for name, v in raw.items():
        if name == "mode":
            if v not in MODES:
                raise OptionError(f"option 'mode' = {v!r}: must be one of {', '.join(MODES)}")
            out[name] = v
        elif name in ("metadata", "links"):
            out[name] = _bool(name, v)
        elif name == "timeout":
            out[name] = _number(name, v, float, cfg.timeout)
        elif name == "max_bytes":
            out[name] = _number(name, v, int, cfg.max_bytes)
        elif name == "accept_language":
            # Printable ASCII only: a CR or LF here would smuggle headers into the upstream request.
            if not isinstance(v, str) or len(v) > MAX_ACCEPT_LANGUAGE or not all(" " <= c <= "~" for c in v):
                raise OptionError(
                    f"option 'accept_language' must be printable ASCII of at most {MAX_ACCEPT_LANGUAGE} "
                    "characters"
                )
            out[name] = v
        else:
            raise OptionError(f"unknown option {name!r} (known: {', '.join(NAMES)})")
    return out or None


def effective(given: dict[str, Any] | None, cfg: FetchConfig) -> Options:
    """The options in force: the checked ``given`` map over the config's defaults."""
    g = given or {}
    return Options(
        mode=g.get("mode", cfg.mode),
        metadata=g.get("metadata", cfg.metadata),
        links=g.get("links", False),
        timeout=g.get("timeout", cfg.timeout),
        accept_language=g.get("accept_language"),
        max_bytes=g.get("max_bytes", cfg.max_bytes),
        if_none_match=g.get(OPT_IF_NONE_MATCH),
        if_modified_since=g.get(OPT_IF_MODIFIED_SINCE),
        sitemap=g.get(OPT_SITEMAP),
    )
