"""Configuration: an INI file read with configparser into frozen dataclasses.

Every key has a type, a default and a check. A bad value raises ConfigError naming the section, key and
value; the CLI turns that into exit code 2. Unknown sections and keys are errors too, so that a typo does
not silently fall back to a default.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
import stat
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
    # PEM file of CA certificates to trust *instead of* the default bundle (e.g. an internal CA); "" = default.
    ca_bundle: str = ""


@dataclass(frozen=True)
class SecurityConfig:
    allow_networks: tuple[str, ...] = ()
    deny_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class HttpConfig:
    listen: str = ""


@dataclass(frozen=True)
class PolitenessConfig:
    per_host: int = field(default=8, metadata=_check(1, 65536))
    delay: float = field(default=0.0, metadata=_check(0, 3600))
    max_retry_after: float = field(default=120.0, metadata=_check(0, 86400))
    backoff: float = field(default=1.0, metadata=_check(0, 3600))
    max_wait: float = field(default=60.0, metadata=_check(0.01, 86400))


@dataclass(frozen=True)
class RobotsConfig:
    obey: bool = False
    user_agent: str = "shmfetch"
    ttl: float = field(default=86400.0, metadata=_check(1, 30 * 86400))
    error_ttl: float = field(default=300.0, metadata=_check(1, 86400))
    timeout: float = field(default=10.0, metadata=_check(0.01, 600))


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
    if cfg.cluster.redis:
        from .cluster.streams import check_url

        if why := check_url(cfg.cluster.redis):
            raise ConfigError(f"[cluster] redis = {cfg.cluster.redis!r}: not a Redis URL ({why})")
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
