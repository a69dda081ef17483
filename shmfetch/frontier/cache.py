"""The HTTP cache: extracted results in SQLite, answered by the master without a fetch while fresh.

Off unless ``[cache] path`` is set. One SQLite database in WAL mode, written by the master only (readers,
such as ``shmfetch cache stats``, never block it; keep it on a local disk, not NFS: sqlite.org/wal.html).

Key: the normalized URL (scheme and host lower-cased, default port and fragment dropped, empty path ``/``)
plus the request's mode, so the same page extracted two ways is two entries.

Freshness (RFC 9111 section 4.2, as Scrapy's RFC2616Policy applies it), computed when an entry is stored:
  * ``Cache-Control: no-store`` -> not stored; ``no-cache`` -> stored, but always revalidated;
  * ``max-age=N`` -> fresh for N s; else ``Expires`` - ``Date`` (a bad Expires means already stale);
  * else, with ``Last-Modified``, the heuristic (Date - Last-Modified) x ``heuristic_fraction``,
    capped at ``heuristic_max``.
A fresh entry is a hit (``lookup`` -> ``Entry.fresh``). A stale one with ETag or Last-Modified is
revalidated: the master sends If-None-Match / If-Modified-Since, and a 304 answers with the stored text
and refreshes the entry (``refresh``). A stale entry without validators is simply refetched.

Size: the sum of the stored texts is capped at ``max_bytes``; the least recently used entries go first.

Failure: any SQLite error (a corrupt or unwritable file, a full disk) is logged once and the cache turns
itself off (``enabled`` false); the daemon goes on fetching, and no request is lost because of it.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import msgpack

from ..fetch.content import http_date
from ..job import text as as_str  # result fields arrive as UTF-8 bytes

log = logging.getLogger("shmfetch.cache")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    status INTEGER,
    final_url TEXT,
    content_type TEXT,
    text BLOB NOT NULL,
    etag TEXT,
    last_modified TEXT,
    cache_control TEXT,
    expires TEXT,
    date TEXT,
    fields BLOB NOT NULL,
    stored REAL NOT NULL,
    fresh_until REAL NOT NULL,
    used REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_used ON entries (used);
"""
# The layout above (PRAGMA user_version). A file of another version is emptied on open: it is a cache.
# 2: entries keep the page fields (protocol.METADATA_FIELDS), msgpack, so a hit answers them too.
# 3: and every response header field a result carries (HEADER_FIELDS), so a hit answers those too.
SCHEMA_VERSION = 3
# The response header fields a result carries (protocol.Result) and an entry keeps, as the response it
# stores or the 304 that last refreshed it gave them.
HEADER_FIELDS = ("etag", "last_modified", "cache_control", "expires", "date")
_COLUMNS = "status, final_url, content_type, text, fields, " + ", ".join(HEADER_FIELDS) + ", fresh_until"
_DEFAULT_PORTS = {"http": 80, "https": 443}
CACHE_KIB = 16384
# A hit's "most recently used" mark is a write; writing it per hit cost ~100 us of the master's CPU (a
# transaction each). Marks are kept here and written together, before any eviction reads them.
TOUCH_BATCH = 256


@functools.lru_cache(maxsize=4096)  # a hit is by definition a URL seen before; the split is 8 % of a hit
def cache_key(url: str, mode: str) -> str:
    """The normalized URL plus the mode: ``"MODE URL"``; "" (not cached) for a URL with credentials.

    A URL with ``user:pw@`` is fetched with those credentials: its page is that user's, so it is neither
    answered from nor stored in the cache (and no key, hence no file, ever holds the credentials)."""
    try:
        u = urllib.parse.urlsplit(url.strip())
        scheme = u.scheme.lower()
        host = (u.hostname or "").rstrip(".")
        port = u.port
    except ValueError:
        return f"{mode} {url}"
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    if "@" in u.netloc:
        return ""
    return f"{mode} {urllib.parse.urlunsplit((scheme, netloc, u.path or '/', u.query, ''))}"


def _directives(cache_control: str | None) -> dict[str, str]:
    out = {}
    for part in (cache_control or "").lower().split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = value.strip().strip('"')
    return out


@dataclass
class Entry:
    key: str
    status: int | None
    final_url: str | None
    content_type: str | None
    text: bytes  # UTF-8, as the master forwards result texts
    fields: dict[str, Any]  # the page fields (protocol.METADATA_FIELDS), strings as UTF-8 bytes too
    headers: dict[str, str | None]  # HEADER_FIELDS, of the stored response or of the 304 that refreshed it
    fresh: bool

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("last_modified")


class HttpCache:
    """The master's cache. Every method is safe to call when the cache is off (it does nothing)."""

    def __init__(self, path: str, max_bytes: int, heuristic_fraction: float, heuristic_max: float):
        self.path = path
        self.max_bytes = max_bytes
        self.heuristic_fraction = heuristic_fraction
        self.heuristic_max = heuristic_max
        self.db: sqlite3.Connection | None = None
        self.total = 0
        self._touched: dict[str, float] = {}
        try:
            self.db = self._open(path)
            self.total = self.db.execute("SELECT coalesce(sum(size), 0) FROM entries").fetchone()[0]
        except sqlite3.Error as e:
            self._disable("open", e)

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        _create_private(path)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit is not an fsync; a power cut may lose the last entries, never corrupt.
            db.execute("PRAGMA synchronous=NORMAL")
            # 16 MiB of page cache (default 2 MiB): a hit on a 50 KB text is 31 us instead of 61 us when
            # the hot entries fit (docs/BENCHMARKS.md, "HTTP cache").
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                db.executescript(f"DROP TABLE IF EXISTS entries; PRAGMA user_version = {SCHEMA_VERSION};")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    @property
    def enabled(self) -> bool:
        return self.db is not None

    def _disable(self, what: str, e: Exception) -> None:
        log.error("HTTP cache %s: %s failed (%s); going on without the cache", self.path, what, e)
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
        self.db = None

    # -- reads ---------------------------------------------------------------------------------------

    def lookup(self, key: str, now: float | None = None) -> Entry | None:
        """The entry for ``key`` (fresh or stale, marked), or None. A hit becomes the most recently used."""
        if self.db is None or not key:
            return None
        now = time.time() if now is None else now
        try:
            row = self.db.execute(f"SELECT {_COLUMNS} FROM entries WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
        except sqlite3.Error as e:
            self._disable("lookup", e)
            return None
        self._touched[key] = now
        if len(self._touched) >= TOUCH_BATCH:
            self._flush_touches()
        fields = msgpack.unpackb(row[4], raw=False)  # str names; the values stay UTF-8 bytes (bin)
        headers = dict(zip(HEADER_FIELDS, row[5:-1], strict=True))
        return Entry(key, row[0], row[1], row[2], row[3], fields, headers, row[-1] > now)

    # -- writes --------------------------------------------------------------------------------------

    def _flush_touches(self) -> None:
        """Write the pending "most recently used" marks in one transaction."""
        if not self._touched or self.db is None:
            return
        marks = [(t, k) for k, t in self._touched.items()]
        self._touched.clear()
        try:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("UPDATE entries SET used = max(used, ?) WHERE key = ?", marks)
        except sqlite3.Error as e:
            self._disable("touch", e)

    def freshness(self, headers: dict[str, Any], now: float) -> float | None:
        """Seconds the response stays fresh, or None if it must not be stored (no-store)."""
        cc = _directives(headers.get("cache_control"))
        if "no-store" in cc:
            return None
        if "no-cache" in cc:
            return 0.0
        if "max-age" in cc:
            try:
                return max(0.0, float(cc["max-age"]))
            except ValueError:
                return 0.0
        date = http_date(headers.get("date")) or now
        if headers.get("expires"):
            expires = http_date(headers["expires"])
            return max(0.0, expires - date) if expires is not None else 0.0
        last_modified = http_date(headers.get("last_modified"))
        if last_modified is not None:
            return min(self.heuristic_max, max(0.0, (date - last_modified) * self.heuristic_fraction))
        return 0.0

    def store(
        self,
        key: str,
        status: int | None,
        final_url: Any,
        content_type: Any,
        text: bytes,
        fields: dict[str, Any],
        headers: dict[str, Any],
        now: float | None = None,
    ) -> bool:
        """Store a successful result, its page ``fields`` and its response ``headers`` (HEADER_FIELDS).
        True if stored."""
        if self.db is None or not key:
            return False
        now = time.time() if now is None else now
        ttl = self.freshness(headers, now)
        etag, last_modified = headers.get("etag"), headers.get("last_modified")
        if ttl is None or (ttl <= 0 and not etag and not last_modified):
            return False  # no-store, or nothing to serve it fresh or revalidate it with
        packed = msgpack.packb(fields, use_bin_type=True)
        size = len(text) + len(packed) + 256  # plus the row's own cost, so tiny pages count too
        if size > self.max_bytes:
            return False
        try:
            old = self.db.execute("SELECT size FROM entries WHERE key = ?", (key,)).fetchone()
            self.db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, status, as_str(final_url), as_str(content_type), bytes(text),
                 *(as_str(headers.get(h)) for h in HEADER_FIELDS), packed, now, now + ttl, now, size),
            )  # fmt: skip
            self.total += size - (old[0] if old else 0)
            if self.total > self.max_bytes:
                self._evict()
        except sqlite3.Error as e:
            self._disable("store", e)
            return False
        return True

    def refresh(self, entry: Entry, headers: dict[str, Any], now: float | None = None) -> None:
        """A 304 revalidated ``entry``: its header fields are updated with those the 304 carries (RFC 9111
        section 4.3.4), in the database and in ``entry``, and its freshness is computed from them."""
        if self.db is None:
            return
        now = time.time() if now is None else now
        for h in HEADER_FIELDS:
            if (v := as_str(headers.get(h))) is not None:
                entry.headers[h] = v
        ttl = self.freshness(entry.headers, now)
        if ttl is None:
            self.delete(entry.key)
            return
        sets = ", ".join(f"{h} = ?" for h in HEADER_FIELDS)
        try:
            self.db.execute(
                f"UPDATE entries SET fresh_until = ?, stored = ?, used = ?, {sets} WHERE key = ?",
                (now + ttl, now, now, *(entry.headers.get(h) for h in HEADER_FIELDS), entry.key),
            )
        except sqlite3.Error as e:
            self._disable("refresh", e)

    def delete(self, key: str) -> None:
        if self.db is None:
            return
        try:
            row = self.db.execute("DELETE FROM entries WHERE key = ? RETURNING size", (key,)).fetchone()
            if row:
                self.total -= row[0]
        except sqlite3.Error as e:
            self._disable("delete", e)

    def _evict(self) -> None:
        """Drop least recently used entries until the total is 90 % of the cap (so not on every store)."""
        self._flush_touches()
        self.total = self.db.execute("SELECT coalesce(sum(size), 0) FROM entries").fetchone()[0]
        excess = self.total - self.max_bytes * 9 // 10
        victims = []
        for key, size in self.db.execute("SELECT key, size FROM entries ORDER BY used"):
            if excess <= 0:
                break
            victims.append((key,))
            excess -= size
            self.total -= size
        self.db.executemany("DELETE FROM entries WHERE key = ?", victims)

    # -- management (also used by `shmfetch cache stats|purge`) --------------------------------------

    def stats(self, now: float | None = None) -> dict[str, Any]:
        if self.db is None:
            return {"enabled": False, "path": self.path}
        now = time.time() if now is None else now
        try:
            n, size, fresh = self.db.execute(
                "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(fresh_until > ?), 0) FROM entries",
                (now,),
            ).fetchone()
        except sqlite3.Error as e:
            self._disable("stats", e)
            return {"enabled": False, "path": self.path}
        return {
            "enabled": True,
            "path": self.path,
            "entries": n,
            "fresh": fresh,
            "bytes": size,
            "max_bytes": self.max_bytes,
        }

    def purge(self) -> int:
        """Delete every entry; returns how many there were."""
        if self.db is None:
            return 0
        n = self.db.execute("DELETE FROM entries").rowcount
        self.db.execute("VACUUM")
        self.total = 0
        return n

    def close(self) -> None:
        if self.db is not None:
            self._flush_touches()
        if self.db is not None:
            self.db.close()
            self.db = None


def _create_private(path: str) -> None:
    """Create the database file 0600 (SQLite gives its -wal and -shm files the database's mode): it holds
    the fetched texts and URLs. A file of ours that is readable by others is made private too."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise sqlite3.OperationalError(f"cannot open {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def open_cache(cfg: Any) -> HttpCache | None:
    """The cache ``[cache]`` configures, or None when ``path`` is empty."""
    if not cfg.path:
        return None
    return HttpCache(cfg.path, cfg.max_bytes, cfg.heuristic_fraction, cfg.heuristic_max)
