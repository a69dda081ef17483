"""Configuration: an INI file read with configparser into frozen dataclasses.

Every key has a type, a default and a check. A bad value raises ConfigError naming the section, key and
value; the CLI turns that into exit code 2. Unknown sections and keys are errors too, so that a typo does
not silently fall back to a default.
"""

from __future__ import annotations

import configparser
import dataclasses
import errno
import ipaddress
import logging
import logging.handlers
import os
import stat
import urllib.parse
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A config value is missing, malformed or out of range. The message names the key and the value."""


def _check(lo: float | None = None, hi: float | None = None, choices: tuple[str, ...] | None = None) -> dict:
    return {"lo": lo, "hi": hi, "choices": choices}


# Content modes (docs: README "Content modes"): full text, main content, main content as Markdown.
MODES = ("text", "main", "markdown")


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def runtime_dir() -> str:
    """The directory of the default socket and pidfile: one that only this user can write to, so nobody
    else can put a socket, a pidfile or a symlink there first. ``$XDG_RUNTIME_DIR/shmfetch`` when that is a
    directory of ours; else ``/run/shmfetch`` for root; else ``/tmp/shmfetch-UID``. The daemon creates it
    mode 0700 and refuses it if it is not a directory of ours that only we can write (master/pidfile.py,
    ``prepare_runtime_dir``)."""
    uid = os.geteuid()
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):
        try:
            st = os.stat(xdg)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
            return os.path.join(xdg, "shmfetch")
    return "/run/shmfetch" if uid == 0 else f"/tmp/shmfetch-{uid}"


def _default_socket() -> str:
    return os.path.join(runtime_dir(), "shmfetch.sock")


def _default_pidfile() -> str:
    return os.path.join(runtime_dir(), "shmfetch.pid")


@dataclass(frozen=True)
class DaemonConfig:
    workers: int = field(default=2, metadata=_check(1, 256))
    threads: int = field(default=16, metadata=_check(1, 256))
    socket: str = field(default_factory=_default_socket)  # runtime_dir()/shmfetch.sock
    pidfile: str = field(default_factory=_default_pidfile)  # runtime_dir()/shmfetch.pid
    drain_timeout: float = field(default=10.0, metadata=_check(0, 3600))
    max_pending: int = field(default=10000, metadata=_check(1, 10_000_000))
    max_inflight_per_worker: int = field(default=64, metadata=_check(1, 65536))
    max_frame_bytes: int = field(default=1 << 20, metadata=_check(64, 1 << 30))
    max_connections: int = field(default=4096, metadata=_check(1, 1_000_000))
    client_buffer_bytes: int = field(default=64 << 20, metadata=_check(1 << 16, 1 << 34))
    hang_grace: float = field(default=5.0, metadata=_check(0.1, 3600))
    log_level: str = field(default="info", metadata=_check(choices=("debug", "info", "warning", "error")))
    log_file: str = ""


@dataclass(frozen=True)
class RingConfig:
    request_slots: int = field(default=1024, metadata=_check(2, 1 << 24))
    request_slot_size: int = field(default=256, metadata=_check(64, 1 << 20))
    result_slots: int = field(default=1024, metadata=_check(2, 1 << 24))
    result_slot_size: int = field(default=4096, metadata=_check(64, 1 << 20))


@dataclass(frozen=True)
class FetchConfig:
    timeout: float = field(default=10.0, metadata=_check(0.01, 3600))
    max_bytes: int = field(default=32 << 20, metadata=_check(1, 1 << 34))
    max_decoded_bytes: int = field(default=32 << 20, metadata=_check(1, 1 << 34))
    max_text_bytes: int = field(default=16 << 20, metadata=_check(1, 1 << 31))
    max_redirects: int = field(default=5, metadata=_check(0, 100))
    retries: int = field(default=2, metadata=_check(0, 20))
    user_agent: str = "shmfetch/0.1 (+https://example.invalid/shmfetch)"
    noscript: str = field(default="drop", metadata=_check(choices=("drop", "keep")))
    mode: str = field(default="text", metadata=_check(choices=MODES))
    metadata: bool = False  # also `published` (htmldate) in every result, not only when a request asks
    max_links: int = field(
        default=1000, metadata=_check(1, 1_000_000)
    )  # links=true: more sets links_truncated
    # Most tags (start and end tags: each "<") of a page parsed into a tree, which costs ~280 bytes a tag
    # (a 7 MB page of 300 000 links, 600 000 tags, took 170 MB as a tree, 232 MB with its text and links).
    # Over it, the text comes from the streaming parser (13 MB for that page), without metadata, links or
    # main content. 200 000 tags: a tree of ~56 MB; a 150 KB news page has 3 000-6 000.
    max_tree_tags: int = field(default=200_000, metadata=_check(1000, 100_000_000))
    # PEM file of CA certificates to trust *instead of* the default bundle (e.g. an internal CA); "" = default.
    ca_bundle: str = ""


@dataclass(frozen=True)
class SecurityConfig:
    allow_networks: tuple[str, ...] = ()
    deny_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class HttpConfig:
    listen: str = ""
    # A file holding the API's bearer token (else $SHMFETCH_HTTP_TOKEN); "" and no variable: no token.
    token_file: str = ""
    metrics_public: bool = False  # GET /metrics without the token
    allow_unauthenticated: bool = False  # listen beyond loopback without a token, on purpose
    # Host names (besides the listen address) a request's Host and Origin may name: the DNS-rebinding guard.
    allowed_hosts: tuple[str, ...] = ()
    # Seconds a connection may take to send a request's headers (and may sit idle between requests).
    header_timeout: float = field(default=5.0, metadata=_check(0.1, 3600))


@dataclass(frozen=True)
class PolitenessConfig:
    per_host: int = field(default=8, metadata=_check(1, 65536))
    delay: float = field(default=0.0, metadata=_check(0, 3600))
    max_retry_after: float = field(default=120.0, metadata=_check(0, 86400))
    backoff: float = field(default=1.0, metadata=_check(0, 3600))
    max_wait: float = field(default=60.0, metadata=_check(0.01, 86400))
    # Hosts whose state (delay, pause) the master keeps; past it the least recently used idle one goes.
    max_hosts: int = field(default=10000, metadata=_check(16, 10_000_000))


@dataclass(frozen=True)
class RobotsConfig:
    obey: bool = False
    user_agent: str = "shmfetch"
    ttl: float = field(default=86400.0, metadata=_check(1, 30 * 86400))
    error_ttl: float = field(default=300.0, metadata=_check(1, 86400))
    timeout: float = field(default=10.0, metadata=_check(0.01, 600))
    # robots.txt decisions kept in the master; past it the least recently used one goes (and is refetched).
    max_origins: int = field(default=10000, metadata=_check(16, 10_000_000))


@dataclass(frozen=True)
class CacheConfig:
    path: str = ""
    max_bytes: int = field(default=1 << 30, metadata=_check(1 << 16, 1 << 44))
    heuristic_fraction: float = field(default=0.1, metadata=_check(0, 1))
    heuristic_max: float = field(default=86400.0, metadata=_check(0, 365 * 86400))
    count_hits: bool = False


@dataclass(frozen=True)
class ClusterConfig:
    """Redis Streams intake (shmfetch/cluster); off while ``redis`` is empty."""

    redis: str = ""
    jobs: str = "shmfetch:jobs"
    group: str = "shmfetch"
    results: str = "shmfetch:results"
    results_maxlen: int = field(default=100_000, metadata=_check(1, 1 << 40))
    # 0: twice the longest a job can take, [fetch] timeout x (retries + 1) + [daemon] hang_grace
    claim_idle: float = field(default=0.0, metadata=_check(0, 86400))
    max_deliveries: int = field(default=5, metadata=_check(1, 1000))
    # A job's reply_to stream expires this long after its last result: a client that stopped reading
    # (interrupted, or never closed) leaves nothing behind for good.
    reply_ttl: float = field(default=600.0, metadata=_check(1, 30 * 86400))


@dataclass(frozen=True)
class PdfConfig:
    """PDF documents (shmfetch/extract/pdf.py): off, they are ``unsupported_content_type``."""

    enabled: bool = True
    # Pages extracted at most; past them the result has the first max_pages pages and ``truncated: true``.
    max_pages: int = field(default=500, metadata=_check(1, 1_000_000))
    # Bytes the PDF's compressed streams may inflate to in all (counted before PDFium reads them).
    max_inflated_bytes: int = field(default=256 << 20, metadata=_check(1 << 16, 1 << 34))


# Crawl scopes (docs/CRAWL.md, "Scope"): which links of a page a crawl follows.
SCOPES = ("host", "domain", "prefix", "any")
# Extensions of URLs that are not pages (no text, no links): a crawl does not request them unless an
# `include` pattern asks for it. PDFs are pages here: the workers extract their text.
NON_PAGE_EXTENSIONS = (
    "7z apk avi avif bin bmp bz2 css dmg eot exe flac gif gz ico iso jar jpeg jpg js m4a m4v mkv mov mp3 "
    "mp4 mpeg mpg msi ogg otf png rar rpm svg tar tgz tif tiff ttf wav webm webp wmv woff woff2 xz zip"
).split()


@dataclass(frozen=True)
class CrawlConfig:
    """Crawls (shmfetch/crawl): the defaults of a crawl's rules and the caps on what a caller may ask."""

    depth: int = field(default=2, metadata=_check(0, 1000))  # link hops from a seed (seeds are depth 0)
    max_pages: int = field(default=1000, metadata=_check(1, 100_000_000))  # results in all, failures too
    # The most a crawl may ask for: it bounds the crawl's queue (URL strings) and seen set (16-32 B a URL).
    max_pages_limit: int = field(default=100_000, metadata=_check(1, 100_000_000))
    scope: str = field(default="host", metadata=_check(choices=SCOPES))
    obey_robots: bool = True  # with [robots] user_agent; a caller may turn it off for its crawl
    # Requests of one crawl in the master or the workers at once: a crawl takes its share, not the queue.
    window: int = field(default=64, metadata=_check(1, 65536))
    non_page_extensions: tuple[str, ...] = tuple(NON_PAGE_EXTENSIONS)


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = DaemonConfig()
    ring: RingConfig = RingConfig()
    fetch: FetchConfig = FetchConfig()
    security: SecurityConfig = SecurityConfig()
    http: HttpConfig = HttpConfig()
    politeness: PolitenessConfig = PolitenessConfig()
    robots: RobotsConfig = RobotsConfig()
    cache: CacheConfig = CacheConfig()
    cluster: ClusterConfig = ClusterConfig()
    pdf: PdfConfig = PdfConfig()
    crawl: CrawlConfig = CrawlConfig()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain dict, so that the master can hand the exact config it validated to its workers."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, Any]]) -> Config:
        kw = {}
        for f in dataclasses.fields(cls):
            sect = {k: tuple(v) if isinstance(v, list) else v for k, v in d.get(f.name, {}).items()}
            kw[f.name] = _SECTIONS[f.name](**sect)
        return cls(**kw)


_SECTIONS = {f.name: f.default.__class__ for f in dataclasses.fields(Config)}


# -- budgets derived from several keys: each is computed here, once ----------------------------------------


def hang_limit(cfg: Config) -> float:
    """How long a worker with work may return nothing before the master kills it as hung.

    A fetch ends by ``[fetch] timeout`` (retries included); ``[daemon] hang_grace`` covers the rest.
    """
    return cfg.fetch.timeout + cfg.daemon.hang_grace


def claim_idle(cfg: Config) -> float:
    """``[cluster] claim_idle``, or by default twice the longest a job can take in a worker:
    ``timeout × (retries + 1) + hang_grace``."""
    if cfg.cluster.claim_idle:
        return cfg.cluster.claim_idle
    return 2.0 * (cfg.fetch.timeout * (cfg.fetch.retries + 1) + cfg.daemon.hang_grace)


def check_redis_url(url: str) -> str | None:
    """Why ``url`` is not a usable Redis URL, or None. Used by the config check and the CLI (exit 2)."""
    from redis.connection import parse_url  # redis is imported only where a Redis URL is configured

    try:
        parsed = urllib.parse.urlsplit(url)
        parse_url(url)
        if parsed.scheme in ("redis", "rediss") and not parsed.hostname:
            return "no host"
        if parsed.scheme == "unix" and not parsed.path:
            return "no socket path"
    except ValueError as e:
        return str(e)
    return None


BOOL_WORDS = {  # config values and per-request options alike
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _parse_value(section: str, key: str, raw: str, f: dataclasses.Field) -> Any:
    where = f"[{section}] {key} = {raw!r}"
    typ = f.type
    meta = f.metadata
    try:
        if typ == "int":
            val: Any = int(raw.strip().replace("_", ""), 0)
        elif typ == "float":
            val = float(raw)
        elif typ == "bool":
            val = BOOL_WORDS[raw.strip().lower()]
        elif typ == "tuple[str, ...]":
            val = tuple(x for x in raw.replace(",", " ").split() if x)
        else:
            val = raw.strip()
    except KeyError:
        raise ConfigError(f"{where}: expected true or false") from None
    except ValueError:
        expected = {"int": "an integer", "bool": "true or false"}.get(typ, "a number")
        raise ConfigError(f"{where}: expected {expected}") from None
    if typ in ("int", "float"):
        lo, hi = meta.get("lo"), meta.get("hi")
        if (lo is not None and val < lo) or (hi is not None and val > hi) or val != val:
            raise ConfigError(f"{where}: must be between {lo} and {hi}")
    if meta.get("choices") and val not in meta["choices"]:
        raise ConfigError(f"{where}: must be one of {', '.join(meta['choices'])}")
    return val


def _validate(cfg: Config) -> None:
    for name in ("request", "result"):
        slots = getattr(cfg.ring, f"{name}_slots")
        size = getattr(cfg.ring, f"{name}_slot_size")
        if not _pow2(slots):
            raise ConfigError(f"[ring] {name}_slots = {slots!r}: must be a power of two")
        if not _pow2(size):
            raise ConfigError(f"[ring] {name}_slot_size = {size!r}: must be a power of two")
    for key in ("allow_networks", "deny_networks"):
        for net in getattr(cfg.security, key):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"[security] {key} = {net!r}: not a CIDR network") from None
    if cfg.http.listen:
        host, _, port = cfg.http.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"[http] listen = {cfg.http.listen!r}: expected HOST:PORT")
    for name in cfg.http.allowed_hosts:
        if not all(c.isalnum() or c in ".-_" for c in name):
            raise ConfigError(f"[http] allowed_hosts: {name!r} is not a host name (no port, no scheme)")
    if cfg.cluster.redis:
        if why := check_redis_url(cfg.cluster.redis):
            raise ConfigError(f"[cluster] redis = {cfg.cluster.redis!r}: not a Redis URL ({why})")
    if cfg.crawl.max_pages > cfg.crawl.max_pages_limit:
        raise ConfigError(
            f"[crawl] max_pages = {cfg.crawl.max_pages}: more than [crawl] max_pages_limit = "
            f"{cfg.crawl.max_pages_limit}"
        )
    if not cfg.daemon.socket:
        raise ConfigError("[daemon] socket = '': a socket path is required")


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError with the offending key and value."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as e:
        raise ConfigError(f"cannot read config {str(path)!r}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {str(path)!r} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    except configparser.Error as e:
        raise ConfigError(f"config {str(path)!r} is not valid INI: {e}") from None
    sections: dict[str, Any] = {}
    for sect in parser.sections():
        if sect not in _SECTIONS:
            raise ConfigError(f"[{sect}]: unknown section (known: {', '.join(_SECTIONS)})")
        fields = {f.name: f for f in dataclasses.fields(_SECTIONS[sect])}
        values = {}
        for key, raw in parser.items(sect):
            if key not in fields:
                raise ConfigError(f"[{sect}] {key} = {raw!r}: unknown key")
            values[key] = _parse_value(sect, key, raw, fields[key])
        sections[sect] = _SECTIONS[sect](**values)
    cfg = Config(**sections)
    _validate(cfg)
    return cfg


# -- the log file ([daemon] log_file) ------------------------------------------------------------------


class UnsafePath(OSError):
    """A configured path is a symlink, or not ours, or in a directory others may write: refused."""


def open_nofollow(path: str, flags: int, mode: int = 0o600, ours: bool = True) -> int:
    """``os.open`` that never follows a symlink at ``path`` (UnsafePath) and, with ``ours``, accepts only a
    regular file of ours: a file planted by another user is refused, never written or followed."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(f"{path} is a symbolic link: refusing to follow it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{path} is not a regular file: refusing it")
        if ours and st.st_uid != os.geteuid():
            raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}): refusing it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_private(path: str, flags: int) -> int:
    return open_nofollow(path, flags, 0o600)


class _PrivateOpen:
    """Opens the log file 0600 whatever the umask, and not through a symlink: the log names every URL
    fetched. Every (re)open goes through ``_open``: the first, SIGHUP's and the workers' after logrotate."""

    baseFilename: str  # noqa: N815 (logging's name)
    mode: str
    encoding: str | None
    errors: str | None

    def _open(self) -> Any:
        return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors, opener=_open_private)


class LogFileHandler(_PrivateOpen, logging.FileHandler):
    """The master's log file handler (reopened by the master on SIGHUP)."""


class WatchedLogFileHandler(_PrivateOpen, logging.handlers.WatchedFileHandler):
    """The workers' log file handler (reopens by itself when logrotate moved the file away)."""


# -- the HTTP API's token and exposure -----------------------------------------------------------------

TOKEN_ENV = "SHMFETCH_HTTP_TOKEN"
MIN_TOKEN_CHARS = 16


def http_token(cfg: HttpConfig, env: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The HTTP API's bearer token: ``[http] token_file``'s content, else ``$SHMFETCH_HTTP_TOKEN``, else
    None. Surrounding white space (a trailing newline) is not part of it. Raises ConfigError for an
    unreadable file or a token that is short or not printable ASCII without spaces."""
    if cfg.token_file:
        where = f"[http] token_file = {cfg.token_file!r}"
        try:
            with open(cfg.token_file, encoding="ascii", opener=_open_nofollow) as fh:
                token = fh.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    else:
        where, token = f"${TOKEN_ENV}", env.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS or not all("!" <= c <= "~" for c in token):
        raise ConfigError(
            f"{where}: the token must be at least {MIN_TOKEN_CHARS} printable ASCII characters, no spaces"
        )
    return token


def _open_nofollow(path: str, flags: int) -> int:
    return open_nofollow(path, flags, ours=False)  # a secret may belong to root, mounted for us


def is_loopback_host(host: str) -> bool:
    """Whether a listen host (``127.0.0.1``, ``[::1]``, ``localhost``) is loopback only."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_http_exposure(cfg: Config, env: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """``serve``'s refusal: an HTTP API beyond loopback without a token is an open proxy, unless
    ``[http] allow_unauthenticated = true`` says the operator means it. Also reads the token (ConfigError
    for a bad one), so that a bad token file stops ``serve`` before anything starts."""
    if not cfg.http.listen:
        return
    token = http_token(cfg.http, env)
    host = cfg.http.listen.rpartition(":")[0]
    if token is None and not is_loopback_host(host) and not cfg.http.allow_unauthenticated:
        raise ConfigError(
            f"[http] listen = {cfg.http.listen!r} is not loopback and there is no token: anyone who can "
            f"reach it could make this daemon fetch for them. Set [http] token_file (or ${TOKEN_ENV}), or "
            "[http] allow_unauthenticated = true if that is what you want"
        )
