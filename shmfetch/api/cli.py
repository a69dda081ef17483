"""Command line: ``shmfetch serve | submit | crawl | stats | stop | enqueue | results | cache stats|purge``.

Exit codes: 0 success; 1 some URLs failed (submit, crawl); 2 usage or config error, or no daemon answers;
3 the workers could not boot (serve).

Every command reads its config the same way (``_config``): the file of ``-c``; without ``-c``,
``./config.ini`` if there is one; else the built-in defaults (every key is optional).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import logging.handlers
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from .. import config as config_mod
from .._version import __version__
from ..config import MODES, SCOPES
from ..ipc import names
from ..master.pidfile import running_pid, signal_holder
from ..options import NAMES as OPTION_NAMES
from ..options import OptionError
from ..options import check as check_options
from ..protocol import CrawlSummary, Result
from .client import Client, CrawlRefused, DaemonUnavailable, ProtocolError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_CONFIG = "config.ini"
CONFIG_HELP = "config file (default: ./config.ini if it exists, else the built-in defaults)"


class UsageError(Exception):
    """A command line that cannot run as given (exit 2); the message says why."""


def _config(args: argparse.Namespace) -> config_mod.Config:
    """The one rule of every command: ``-c``'s file; without ``-c``, ./config.ini if it exists; else the
    built-in defaults. Loaded once per run."""
    cfg = getattr(args, "loaded_config", None)
    if cfg is None:
        path = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
        cfg = config_mod.load(path) if path else config_mod.Config()
        args.loaded_config = cfg
    return cfg


LOG_QUEUE_RECORDS = 10_000  # master log records waiting for a slow stderr before new ones are dropped
LOG_FLUSH_TIMEOUT = 2.0  # at exit, the longest the master waits for its queued log lines to be written


class _LogQueue(logging.handlers.QueueHandler):
    """The master's root handler: the event loop only formats a record and queues it; a thread writes
    it out. A stderr nobody reads (a full pipe, a paused terminal) then costs log lines, counted in
    ``dropped``, instead of the loop blocking in ``write`` (stats, signals and every client with it)."""

    def __init__(self, target: logging.Handler):
        super().__init__(queue.Queue(LOG_QUEUE_RECORDS))
        self.target = target
        self.dropped = 0
        self._writer = threading.Thread(target=self._write_out, name="log-writer", daemon=True)
        self._writer.start()

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _write_out(self) -> None:
        while (record := self.queue.get()) is not None:
            self.target.handle(record)

    def flush_and_stop(self, timeout: float) -> None:
        """Write out what is queued, waiting at most ``timeout`` s for a stderr that does not drain."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._writer.join(timeout)


def _setup_logging(cfg: config_mod.Config) -> tuple[logging.Handler, _LogQueue]:
    """The master's log: (the handler that writes, for SIGHUP's reopen; the root's queueing handler)."""
    d = cfg.daemon
    handler: logging.Handler = (
        config_mod.LogFileHandler(d.log_file) if d.log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [master %(process)d] %(message)s"))
    front = _LogQueue(handler)
    root = logging.getLogger()
    root.handlers[:] = [front]
    root.setLevel(d.log_level.upper())
    return handler, front


def cmd_serve(args: argparse.Namespace) -> int:
    from ..master.arbiter import Master, StartupError

    cfg = _config(args)
    config_mod.check_http_exposure(cfg)
    try:  # the log file is claimed like every other resource: before any worker starts
        handler, front = _setup_logging(cfg)
    except OSError as e:
        print(f"shmfetch: cannot open log file {cfg.daemon.log_file}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    master = Master(cfg, handler, front)
    try:
        try:
            master.check_not_running()
        except StartupError as e:
            print(f"shmfetch: {e}", file=sys.stderr)
            return EXIT_USAGE
        return asyncio.run(master.run())
    finally:
        front.flush_and_stop(LOG_FLUSH_TIMEOUT)


def _socket_path(args: argparse.Namespace) -> str:
    return args.socket or _config(args).daemon.socket


def _read_urls(items: list[str]) -> Iterator[str]:
    for item in items:
        if item == "-":
            for line in sys.stdin:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line
        else:
            yield item


def _add_option_arguments(s: argparse.ArgumentParser) -> None:
    """The per-request options (shmfetch/options.py), the same flags for every command that creates jobs;
    unset ones take the daemon's config defaults. ``_request_options`` reads and checks them."""
    g = s.add_argument_group("per-request options (unset: the daemon's [fetch] defaults)")
    g.add_argument("--mode", choices=MODES, help="text (all visible text), main (main content), markdown")
    g.add_argument("--metadata", action="store_true", default=None, help="also the publication date")
    g.add_argument("--links", action="store_true", default=None, help="also the page's links")
    g.add_argument(
        "--timeout", type=float, metavar="S", help="seconds per URL (more than 0, at most [fetch] timeout)"
    )
    g.add_argument(
        "--accept-language", metavar="L", help="Accept-Language header sent upstream (printable ASCII)"
    )
    g.add_argument(
        "--max-bytes",
        type=int,
        metavar="N",
        help="bytes received per URL (at least 1, at most [fetch] max_bytes)",
    )


def _request_options(
    args: argparse.Namespace, caps: config_mod.FetchConfig | None = None
) -> dict[str, Any]:
    """The option flags given, checked once here by the rule the daemon applies (options.check), so that
    a bad flag is one usage error instead of one failure per URL. The bounds are ``caps`` (the daemon's
    own, when it told them), else the [fetch] section of the config this command read."""
    fetch_cfg = caps or _config(args).fetch
    out: dict[str, Any] = {}
    for name in OPTION_NAMES:
        if (v := getattr(args, name)) is None:
            continue
        try:
            out.update(check_options({name: v}, fetch_cfg) or {})
        except OptionError as e:
            raise UsageError(f"--{name.replace('_', '-')} {v}: {e}") from None
    return out


def _write_result(out: TextIO, r: Result, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """One result as ``submit`` prints it: JSON Lines, or ``==> URL`` and the text."""
    if as_json:
        out.write(json.dumps({**(extra or {}), **r.to_dict()}, ensure_ascii=False) + "\n")
    elif r.ok:
        out.write(f"==> {r.url}\n{r.text}\n")
    else:  # once, in the stream, where it belongs among the other results
        out.write(f"==> {r.url} [{r.error}] {r.message or ''}\n")
    out.flush()


def cmd_submit(args: argparse.Namespace) -> int:
    if args.redis:
        from ..cluster.client import RedisClient

        options = _request_options(args)  # the daemons are unknown: the bounds of this command's config
        with _redis_errors(args.redis):
            client: Any = RedisClient(_redis_url(args), _config(args).cluster.jobs)
            return _submit(client, args, options)
    client = Client(_socket_path(args))
    try:
        capped = args.timeout is not None or args.max_bytes is not None
        options = _request_options(args, _daemon_caps(client) if capped else None)
    except BaseException:
        client.close()
        raise
    return _submit(client, args, options)


def _daemon_caps(client: Client) -> config_mod.FetchConfig | None:
    """The bounds of the daemon's per-request options, from its ``stats`` (None from a daemon that does
    not report them): they are its config's, which may not be the config this command read."""
    caps = client.stats().get("request_caps")
    return dataclasses.replace(config_mod.FetchConfig(), **caps) if caps else None


def _submit(client: Any, args: argparse.Namespace, options: dict[str, Any]) -> int:
    failed = 0
    try:
        with client:
            # Both clients take the options as keyword arguments.
            for r in client.fetch_many(_read_urls(args.urls), concurrency=args.concurrency, **options):
                if not r.ok:
                    failed += 1
                _write_result(sys.stdout, r, args.json)
    except BrokenPipeError:
        # The reader has what it wanted (``submit ... | head -1``): stop quietly, like cat does.
        _silence_stdout()
        return EXIT_OK
    return EXIT_FAILED if failed else EXIT_OK


def cmd_crawl(args: argparse.Namespace) -> int:
    rules = _crawl_rules(args)
    client = Client(_socket_path(args))
    try:
        capped = args.timeout is not None or args.max_bytes is not None
        options = _request_options(args, _daemon_caps(client) if capped else None)
    except BaseException:
        client.close()
        raise
    failed = 0
    try:
        with client:
            for got in client.crawl(args.seeds, **rules, **options):
                if isinstance(got, CrawlSummary):
                    _write_summary(got, args.json)
                else:
                    failed += not got.ok
                    _write_result(sys.stdout, got, args.json)
    except CrawlRefused as e:
        raise UsageError(str(e)) from None
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    return EXIT_FAILED if failed else EXIT_OK


def _crawl_rules(args: argparse.Namespace) -> dict[str, Any]:
    """The crawl flags as the rules map; a regex that does not compile is a usage error here already."""
    for flag, patterns in (("--include", args.include), ("--exclude", args.exclude)):
        for p in patterns or ():
            try:
                re.compile(p)
            except re.error as e:
                raise UsageError(f"{flag} {p!r}: not a regular expression ({e})") from None
    return {"depth": args.depth, "max_pages": args.max_pages, "scope": args.scope, "include": args.include,
            "exclude": args.exclude, "robots": args.robots, "sitemaps": args.sitemaps or None}  # fmt: skip


def _write_summary(summary: CrawlSummary, as_json: bool) -> None:
    """The crawl's last line: ``{"summary": {...}}`` in JSON Lines, else one line on stderr."""
    if as_json:
        sys.stdout.write(json.dumps({"summary": summary.to_dict()}) + "\n")
        sys.stdout.flush()
        return
    s = summary
    print(
        f"crawl: {s.ok} ok, {s.failed} failed, {s.robots_denied} denied by robots.txt, {s.out_of_scope} out "
        f"of scope, {s.not_page} not pages, {s.excluded} excluded, {s.duplicates} duplicates; "
        f"limit {s.limit or 'none'}; {s.elapsed_s:.1f} s",
        file=sys.stderr,
    )


def _redis_url(args: argparse.Namespace) -> str:
    """``--redis``, else ``[cluster] redis`` of the config; a usage error when neither is set."""
    url = args.redis or _config(args).cluster.redis
    if not url:
        raise config_mod.ConfigError("no Redis URL: pass --redis URL or set [cluster] redis in the config")
    from ..cluster.streams import safe_url

    if why := config_mod.check_redis_url(url):
        raise config_mod.ConfigError(f"--redis {safe_url(url)!r}: not a Redis URL ({why})")
    return url


@contextlib.contextmanager
def _redis_errors(url: str) -> Iterator[None]:
    """A Redis that cannot be reached is a usage error (exit 2), like a daemon that does not answer."""
    import redis

    from ..cluster.streams import safe_url

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise DaemonUnavailable(f"cannot reach Redis at {safe_url(url)}: {e}") from None


def cmd_enqueue(args: argparse.Namespace) -> int:
    from ..cluster.client import connect, enqueue

    options = _request_options(args)
    url = _redis_url(args)
    with _redis_errors(url), contextlib.closing(connect(url)) as r:
        jobs = args.jobs or _config(args).cluster.jobs
        for eid in enqueue(r, jobs, _read_urls(args.urls), options=options or None):
            print(eid, flush=True)
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    from ..cluster.client import connect, read_results
    from ..cluster.streams import safe_url

    url = _redis_url(args)

    def report(message: str) -> None:  # a follower's outage and recovery, on stderr
        print(f"shmfetch: {safe_url(url)}: {message}", file=sys.stderr, flush=True)

    stream = args.stream or _config(args).cluster.results
    with _redis_errors(url), contextlib.closing(connect(url)) as r:
        for frame in read_results(r, stream, args.follow, report):
            extra = {"job": frame["job"], "id": frame["id"]}
            _write_result(sys.stdout, Result.from_frame(frame), args.json, extra)
    return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush into the closed pipe says nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``lo``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, not {n}")
        return n

    return parse


_positive_int = _int_at_least(1)
_whole_number = _int_at_least(0)


def cmd_stats(args: argparse.Namespace) -> int:
    with Client(_socket_path(args)) as client:
        st = client.stats()
    if args.json:
        print(json.dumps(st, indent=2))
        return EXIT_OK
    print(
        f"shmfetch {st.get('version', '?')}  pid {st['pid']}  uptime {st['uptime_s']:.0f}s  downloaded {st['downloaded']}"
    )
    print(f"in flight {st['in_flight']} (pending in master {st['pending']})  connections {st['connections']}")
    print(f"pages/s  10s: {st['pages_per_s_10s']:.1f}  60s: {st['pages_per_s_60s']:.1f}")
    fails = ", ".join(f"{k}={v}" for k, v in sorted(st["failures"].items())) or "none"
    print(f"failures: {fails}")
    if fr := st.get("frontier"):
        p, c, r = fr["politeness"], fr["cache"], fr["robots"]
        print(
            f"hosts {p['hosts']} (waiting {p['waiting']}, active {p['active']}, paused {p['paused']})  "
            f"retries {st['retries']}  response bytes {fr['response_bytes']}"
        )
        lookups = ", ".join(f"{k}={v}" for k, v in sorted(c["lookups"].items())) or "none"
        print(f"cache: {'on' if c['enabled'] else 'off'}  lookups {lookups}  answers {c['answers']}")
        if r is not None:
            print(f"robots: origins {r['origins']}  fetches {r['fetches']}  denied {r['denied']}")
    if c := st.get("cluster"):
        print(
            f"cluster: {c['consumer']} in {c['group']} on {c['redis']} ({c['state']})  lag {c['lag']}  "
            f"pending {c['pending']}  consumers {c['consumers']}  claimed {c['claimed']}  "
            f"reclaimed {c['reclaimed']}  cluster total {c['cluster_total']}{_figures_age(c)}"
        )
    for w in st["workers"]:
        print(
            f"  worker {w['index']}: pid {w['pid']} {'up' if w['alive'] else 'DOWN'} served {w['served']} "
            f"in flight {w['in_flight']} queued {w['queued']} restarts {w['restarts']}"
        )
    return EXIT_OK


def _figures_age(cluster: dict[str, Any]) -> str:
    """How old the group's figures are, when more than a second (Redis slow or down), else nothing."""
    age = cluster.get("figures_age_s")
    if age is None:
        return "  (group figures not read yet)"
    return f"  (group figures {age:.0f} s old)" if age > 1.5 else ""


def cmd_stop(args: argparse.Namespace) -> int:
    cfg = _config(args)
    # Only the lock on the pidfile says a daemon is alive: the pid written there may have been reused.
    pid = running_pid(cfg.daemon.pidfile)
    if pid is None:
        print(f"shmfetch: no running daemon (pidfile {cfg.daemon.pidfile} is not locked)", file=sys.stderr)
        return EXIT_USAGE
    if pid == 0:
        print(
            f"shmfetch: cannot tell which process holds the lock on {cfg.daemon.pidfile} (one in another "
            "pid namespace?): not signalling anything",
            file=sys.stderr,
        )
        return EXIT_USAGE
    grace = cfg.daemon.drain_timeout + 15
    # Register for the final count first, then signal: the daemon answers just before it closes.
    client = None
    try:
        client = Client(cfg.daemon.socket, timeout=grace)
        client.send_await_exit()
    except (DaemonUnavailable, OSError):
        client = None
    try:
        signal_holder(cfg.daemon.pidfile, pid, signal.SIGUSR1)  # only while it holds the lock
    except ProcessLookupError:
        print(f"shmfetch: pid {pid} no longer holds {cfg.daemon.pidfile}", file=sys.stderr)
        return EXIT_USAGE
    final = None
    if client is not None:
        try:
            final = client.recv_final()
        except (DaemonUnavailable, OSError):
            final = None
        client.close()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not names.pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        print(f"shmfetch: pid {pid} did not exit within {grace:.0f}s", file=sys.stderr)
        return EXIT_FAILED
    print(f"downloaded {final if final is not None else '?'} URLs")
    return EXIT_OK


def cmd_cache(args: argparse.Namespace) -> int:
    from ..frontier.cache import open_cache

    cfg = _config(args)
    cache = open_cache(cfg.cache)
    if cache is None:
        print("shmfetch: [cache] path is not set: the cache is off", file=sys.stderr)
        return EXIT_USAGE
    try:
        if not cache.enabled:
            return EXIT_FAILED  # the reason is logged
        if args.action == "purge":
            print(f"purged {cache.purge()} entries from {cache.path}")
        else:
            print(json.dumps(cache.stats(), indent=2))
    finally:
        cache.close()
    return EXIT_OK


def _add_config_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)


def _add_urls_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("urls", nargs="+", metavar="URL", help="URLs; '-' reads them from stdin, one per line")


def _add_redis_arg(s: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    s.add_argument("--redis", metavar="URL", help="the cluster's Redis (default: [cluster] redis)")


def _add_socket_arg(s: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    s.add_argument("--socket", metavar="PATH", help="the daemon's Unix socket (default: [daemon] socket)")


def _add_submit(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("submit", help="fetch URLs through a running daemon (or the cluster, with --redis)")
    _add_config_arg(s)
    target = s.add_mutually_exclusive_group()  # one place to send to: a daemon's socket, or Redis
    _add_socket_arg(target)
    target.add_argument(
        "--redis", metavar="URL", help="go through the cluster's job stream on this Redis instead"
    )
    s.add_argument("--json", action="store_true", help="print JSON Lines, one object per URL")
    s.add_argument(
        "--concurrency", type=_positive_int, default=64, metavar="N", help="requests in flight (default 64)"
    )
    _add_option_arguments(s)
    _add_urls_arg(s)
    s.set_defaults(func=cmd_submit)


def _add_crawl(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("crawl", help="crawl from seed URLs through a running daemon (docs/CRAWL.md)")
    _add_config_arg(s)
    _add_socket_arg(s)
    g = s.add_argument_group("crawl rules (unset: the daemon's [crawl] defaults)")
    g.add_argument("--depth", type=_whole_number, metavar="N", help="link hops from a seed (seeds: 0)")
    g.add_argument("--max-pages", type=_positive_int, metavar="N", help="results in all, failures too")
    g.add_argument("--scope", choices=SCOPES, help="which links to follow: same host:port, registrable "
                   "domain, URL prefix of the seed, or any")  # fmt: skip
    g.add_argument("--include", action="append", metavar="RE", help="follow only links matching one (repeat)")
    g.add_argument("--exclude", action="append", metavar="RE", help="do not follow links matching (repeat)")
    g.add_argument("--sitemaps", action="store_true", help="also start from the sites' sitemaps")
    g.add_argument("--no-robots", dest="robots", action="store_false", default=None,
                   help="do not obey robots.txt for this crawl")  # fmt: skip
    s.add_argument("--json", action="store_true", help="JSON Lines: one per page, then {\"summary\": ...}")
    _add_option_arguments(s)
    s.add_argument("seeds", nargs="+", metavar="SEED", help="the URLs the crawl starts from")
    s.set_defaults(func=cmd_crawl)


def _add_cluster_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("enqueue", help="append jobs to the cluster's job stream; print their entry ids")
    _add_config_arg(s)
    _add_redis_arg(s)
    s.add_argument("--jobs", metavar="KEY", help="job stream (default: [cluster] jobs)")
    _add_option_arguments(s)
    _add_urls_arg(s)
    s.set_defaults(func=cmd_enqueue)

    s = sub.add_parser("results", help="print the cluster's results stream")
    _add_config_arg(s)
    _add_redis_arg(s)
    s.add_argument("--stream", metavar="KEY", help="results stream (default: [cluster] results)")
    s.add_argument("--follow", action="store_true", help="then wait for new results until interrupted")
    s.add_argument("--json", action="store_true", help="JSON Lines, with the job's entry id and client id")
    s.set_defaults(func=cmd_results)


def _add_admin_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("stats", help="show live figures of a running daemon")
    _add_config_arg(s)
    _add_socket_arg(s)
    s.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("cache", help="HTTP cache: show its figures or delete every entry")
    s.add_argument("action", choices=("stats", "purge"), help="stats: figures as JSON; purge: delete all")
    _add_config_arg(s)
    s.set_defaults(func=cmd_cache)

    s = sub.add_parser("stop", help="stop the daemon (SIGUSR1) and wait for it to exit")
    _add_config_arg(s)
    s.set_defaults(func=cmd_stop)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shmfetch", description="URLs to plain text, at high throughput.")
    p.add_argument("--version", action="version", version=f"shmfetch {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the daemon in the foreground")
    _add_config_arg(s)
    s.set_defaults(func=cmd_serve)
    _add_submit(sub)
    _add_crawl(sub)
    _add_cluster_commands(sub)
    _add_admin_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except config_mod.ConfigError as e:
        print(f"shmfetch: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as e:
        print(f"shmfetch: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (DaemonUnavailable, ProtocolError) as e:
        print(f"shmfetch: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
