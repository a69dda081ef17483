"""The HTTP cache ([cache] path): real SQLite files, real daemons, the real origin counting its hits."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest

from shmfetch import Client
from shmfetch.frontier.cache import HttpCache, cache_key
from shmfetch.protocol import METADATA_FIELDS
from shmfetch.testing.origin import numbered_text

from .helpers import daemon_stats, run_cli, running_daemon


def cache_cfg(tmp_path, **extra: object) -> dict[str, object]:
    return {"path": tmp_path / "cache.db", **extra}


def get(d, url: str):
    with Client(d.socket, timeout=30) as c:
        return c.fetch(url)


@pytest.mark.slow
def test_fresh_entry_is_answered_without_an_origin_hit(tmp_path, origin):
    url = origin.url("/cacheable?key=fresh&cc=max-age%3D600&v=7")
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path)) as d:
        first, second = get(d, url), get(d, url)
        st = daemon_stats(d.socket)
        rc, _ = d.stop()
    assert origin.hits("fresh") == 1
    assert first.ok and not first.cached
    assert second.ok and second.cached and second.worker is None
    assert second.text == first.text == numbered_text(7)
    assert st["frontier"]["cache"]["lookups"] == {"miss": 1, "hit": 1}
    # default: a cache hit is not a download for the SIGUSR1 count (README, "HTTP cache")
    assert rc == 0 and d.last_line() == "downloaded 1 URLs"


@pytest.mark.slow
def test_a_cache_answer_carries_the_page_fields_of_the_fetch(tmp_path, origin):
    """A hit answered title, lang, description... as null: the entry held only the text."""
    fresh = origin.url("/cacheable?key=pf&cc=max-age%3D600&v=5&meta=1")
    stale = origin.url('/cacheable?key=pf304&cc=max-age%3D0&etag="f1"&v=6&meta=1')
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path)) as d:
        first, second = get(d, fresh), get(d, fresh)
        first304, second304 = get(d, stale), get(d, stale)
    assert origin.hits("pf") == 1 and origin.hits("pf304:304") == 1
    assert second.cached and second304.cached
    assert (first.lang, first.description, first304.description) == ("en", "Cached 5", "Cached 6")
    for f in METADATA_FIELDS:
        assert getattr(second, f) == getattr(first, f), f
        assert getattr(second304, f) == getattr(first304, f), f


def test_a_cache_file_of_an_older_layout_is_emptied_not_fatal(tmp_path):
    """Entries gained a column: an older file would fail every insert and switch the cache off."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE entries (key TEXT PRIMARY KEY, status INTEGER, final_url TEXT, content_type TEXT,"
        " text BLOB NOT NULL, etag TEXT, last_modified TEXT, stored REAL NOT NULL, fresh_until REAL NOT NULL,"
        " used REAL NOT NULL, size INTEGER NOT NULL);"
        "INSERT INTO entries VALUES ('text http://h/', 200, NULL, NULL, x'00', NULL, NULL, 0, 9e9, 0, 257);"
    )
    db.close()
    c = HttpCache(str(path), max_bytes=1 << 20, heuristic_fraction=0.1, heuristic_max=86400)
    try:
        assert c.enabled and c.lookup("text http://h/") is None
        assert c.store(
            "text http://h/", 200, None, "text/plain", b"hi", {"title": b"T"}, {"cache_control": "max-age=60"}
        )
        hit = c.lookup("text http://h/")
        assert hit is not None and hit.text == b"hi" and hit.fields == {"title": b"T"}
    finally:
        c.close()


def test_stale_entry_is_revalidated_with_its_etag_and_a_304_gives_the_same_text(tmp_path, origin):
    url = origin.url('/cacheable?key=stale&cc=max-age%3D0&etag="v1"&v=3')
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path)) as d:
        first, second = get(d, url), get(d, url)
        st = daemon_stats(d.socket)
    assert origin.hits("stale") == 2 and origin.hits("stale:304") == 1
    assert first.ok and second.ok and second.cached
    assert second.text == first.text == numbered_text(3)
    assert st["frontier"]["cache"]["lookups"] == {"miss": 1, "revalidate": 1}


@pytest.mark.slow
def test_last_modified_validator_and_heuristic_freshness(tmp_path, origin):
    lm = "Mon, 01 Jan 2024 00:00:00 GMT"
    url = origin.url(f"/cacheable?key=lm&lm={lm}&v=4")  # no max-age: (Date - LM) / 10 is many days
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path)) as d:
        assert get(d, url).ok and get(d, url).cached
    assert origin.hits("lm") == 1
    url = origin.url(f"/cacheable?key=lm0&lm={lm}&v=4")
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path, heuristic_fraction=0)) as d:
        first, second = get(d, url), get(d, url)
    assert origin.hits("lm0") == 2 and origin.hits("lm0:304") == 1  # If-Modified-Since
    assert second.cached and second.text == first.text


def test_no_store_is_never_cached(tmp_path, origin):
    url = origin.url("/cacheable?key=nostore&cc=no-store&etag=x")
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path)) as d:
        results = [get(d, url) for _ in range(3)]
    assert origin.hits("nostore") == 3 and origin.hits("nostore:304") == 0
    assert all(r.ok and not r.cached for r in results)
    with sqlite3.connect(tmp_path / "cache.db") as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0


@pytest.mark.slow
def test_cache_survives_a_restart_and_hits_count_only_when_configured(tmp_path, origin):
    url = origin.url("/cacheable?key=restart&cc=max-age%3D600&v=5")
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path)) as d:
        assert get(d, url).ok
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path, count_hits="true")) as d:
        r = get(d, url)
        rc, _ = d.stop()
    assert r.cached and r.text == numbered_text(5)
    assert origin.hits("restart") == 1
    assert rc == 0 and d.last_line() == "downloaded 1 URLs"  # count_hits = true


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage", "unwritable"])
def test_a_corrupt_or_unwritable_cache_is_logged_and_the_daemon_goes_on(tmp_path, origin, damage):
    path = tmp_path / "cache.db"
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        path = tmp_path / "no-such-dir" / "cache.db"
    urls = [origin.url(f"/cacheable?key=corrupt-{damage}&cc=max-age%3D600&v={i}") for i in range(20)]
    with running_daemon(tmp_path, cache={"path": path}) as d:
        with Client(d.socket, timeout=30) as c:
            results = list(c.fetch_many(urls + urls))
        rc, _ = d.stop()
    assert rc == 0 and all(r.ok and not r.cached for r in results)
    assert origin.hits(f"corrupt-{damage}") == 40
    assert "going on without the cache" in d.stderr
    assert d.last_line() == "downloaded 40 URLs"


def test_size_cap_evicts_least_recently_used(tmp_path):
    c = HttpCache(str(tmp_path / "c.db"), max_bytes=64 * 1024, heuristic_fraction=0.1, heuristic_max=86400)
    text = b"x" * 10_000
    headers = {"cache_control": "max-age=600"}
    keys = [cache_key(f"http://h/{i}", "text") for i in range(10)]
    for i, k in enumerate(keys[:5]):
        assert c.store(k, 200, None, "text/plain", text, {}, headers, now=1000.0 + i)
    assert c.lookup(keys[0], now=1010.0).fresh  # key 0 becomes the most recently used
    for i, k in enumerate(keys[5:]):
        c.store(k, 200, None, "text/plain", text, {}, headers, now=1020.0 + i)
    present = {k for k in keys if c.lookup(k, now=1030.0) is not None}
    assert keys[0] in present and keys[1] not in present and keys[-1] in present
    assert c.stats(now=1030.0)["bytes"] <= 64 * 1024
    c.close()


def test_key_normalizes_the_url_and_includes_the_mode():
    assert cache_key("HTTP://Example.COM:80/a?b=1#frag", "text") == "text http://example.com/a?b=1"
    assert cache_key("https://example.com", "text") == "text https://example.com/"
    assert cache_key("http://example.com/a", "markdown") != cache_key("http://example.com/a", "text")


def test_the_key_carries_the_mode_in_force_when_the_request_names_none(tmp_path, origin):
    """Regression: the frontier keyed a request without a mode as "text" whatever [fetch] mode said, so a
    daemon whose default is main stored its main-content text under the full-text key, where a later
    ``mode=text`` request was answered with it."""
    url = origin.url("/cacheable?key=mode&cc=max-age%3D600&v=5")
    with running_daemon(tmp_path, fetch={"mode": "main"}, cache=cache_cfg(tmp_path)) as d:
        default, text = get(d, url), None
        with Client(d.socket, timeout=30) as c:
            text = c.fetch(url, mode="text")
    with sqlite3.connect(tmp_path / "cache.db") as db:
        keys = sorted(k for (k,) in db.execute("SELECT key FROM entries"))
    assert keys == sorted([cache_key(url, "main"), cache_key(url, "text")])
    assert default.ok and text.ok and not text.cached
    assert origin.hits("mode") == 2


@pytest.mark.slow
def test_a_request_for_links_or_metadata_is_not_answered_from_the_cache(tmp_path, origin):
    """Regression: an entry holds only the text, so a hit answered a links=true request without links
    (and a metadata=true one without its fields). Such requests now go to the origin."""
    url = origin.url("/cacheable?key=fields&cc=max-age%3D600&v=6")
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path)) as d, Client(d.socket, timeout=30) as c:
        plain = c.fetch(url)
        linked = c.fetch(url, links=True)
        meta = c.fetch(url, metadata=True)
        again = c.fetch(url)
    assert plain.ok and not plain.cached
    assert linked.ok and not linked.cached and linked.links == []
    assert meta.ok and not meta.cached and meta.worker is not None
    assert again.ok and again.cached and again.text == plain.text
    assert origin.hits("fields") == 3


@pytest.mark.slow
def test_cache_stats_and_purge_commands(tmp_path, origin):
    url = origin.url("/cacheable?key=cli&cc=max-age%3D600")
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path)) as d:
        assert get(d, url).ok
        st = json.loads(run_cli("cache", "stats", "-c", str(d.config)).stdout)
        assert st["entries"] == 1 and st["fresh"] == 1
    p = run_cli("cache", "purge", "-c", str(d.config))
    assert p.returncode == 0 and "purged 1 entries" in p.stdout
    assert json.loads(run_cli("cache", "stats", "-c", str(d.config)).stdout)["entries"] == 0


def test_a_cache_answer_carries_the_header_fields_of_the_response_or_of_its_304(tmp_path, origin):
    """A hit, and an answer after a 304, gave etag, last_modified, cache_control, expires and date as null."""
    lm, expires = "Wed, 01 Jan 2025 00:00:00 GMT", "Thu, 01 Jan 2037 00:00:00 GMT"
    first_headers = {"ETag": '"h1"', "Last-Modified": lm, "Cache-Control": "max-age=0"}
    origin.respond("/hdr", 200, b"<p>header fields</p>", {"Content-Type": "text/html", **first_headers})
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path)) as d, Client(d.socket, timeout=30) as c:
        first = c.fetch(origin.url("/hdr"))
        origin.respond("/hdr", 304, b"", {"ETag": '"h1"', "Cache-Control": "max-age=600", "Expires": expires})
        after_304 = c.fetch(origin.url("/hdr"))
        hit = c.fetch(origin.url("/hdr"))
    assert first.ok and not first.cached and (first.etag, first.cache_control) == ('"h1"', "max-age=0")
    assert after_304.cached and hit.cached and after_304.text == hit.text == first.text
    for r in (after_304, hit):  # the 304's fields where it has them, the stored response's elsewhere
        assert (r.etag, r.last_modified, r.cache_control, r.expires) == ('"h1"', lm, "max-age=600", expires)
        assert r.date and r.date.endswith("GMT")
    assert sum(1 for e in origin.log if e[0] == "/hdr") == 2  # the hit went to no origin


def test_a_cache_file_of_the_previous_layout_is_emptied_on_open(tmp_path):
    """Layout 2 had no cache_control, expires or date: its entries would answer those as null."""
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE entries (key TEXT PRIMARY KEY, status INTEGER, final_url TEXT, content_type TEXT,"
        " text BLOB NOT NULL, etag TEXT, last_modified TEXT, fields BLOB NOT NULL, stored REAL NOT NULL,"
        " fresh_until REAL NOT NULL, used REAL NOT NULL, size INTEGER NOT NULL);"
        "INSERT INTO entries VALUES ('text http://h/', 200, NULL, NULL, x'00', 'e', NULL, x'80', 0, 9e9, 0, 257);"
        "PRAGMA user_version = 2;"
    )
    db.close()
    c = HttpCache(str(path), max_bytes=1 << 20, heuristic_fraction=0.1, heuristic_max=86400)
    try:
        assert c.enabled and c.lookup("text http://h/") is None and c.stats()["entries"] == 0
        assert c.store("text http://h/", 200, None, "text/plain", b"hi", {}, {"cache_control": "max-age=60"})
        assert c.lookup("text http://h/").headers["cache_control"] == "max-age=60"
    finally:
        c.close()


def test_the_cache_database_and_the_log_file_are_created_private(tmp_path, origin):
    """Both came out with the umask's mode (-rw-r--r--): another user read the cached texts, URLs and log."""
    log = tmp_path / "daemon.log"
    old = os.umask(0o022)
    try:
        with running_daemon(tmp_path, cache=cache_cfg(tmp_path), daemon={"log_file": log}) as d:
            assert get(d, origin.url("/cacheable?key=private&cc=max-age%3D600")).ok
            files = [log, *tmp_path.glob("cache.db*")]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    finally:
        os.umask(old)
    assert {"daemon.log", "cache.db", "cache.db-wal"} <= modes.keys()
    assert set(modes.values()) == {0o600}, modes


def test_a_url_with_credentials_is_never_cached_nor_keyed(tmp_path, origin):
    """Keys kept ``user:pw@``, readable in the file; and a page fetched with one user's credentials must not
    answer a request with other credentials or none."""
    url = origin.url("/cacheable?key=creds&cc=max-age%3D600").replace("://", "://alice:s3cret@")
    assert cache_key(url, "text") == ""
    with running_daemon(tmp_path, cache=cache_cfg(tmp_path)) as d:
        first, second = get(d, url), get(d, url)
    assert first.ok and second.ok and not second.cached and origin.hits("creds") == 2
    with sqlite3.connect(tmp_path / "cache.db") as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0
    assert b"s3cret" not in (tmp_path / "cache.db").read_bytes()
