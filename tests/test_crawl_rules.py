"""The crawl's rules in-process: refusals before anything is queued, the scopes, the non-page test, the
normalizer and the seen set's digests."""

from __future__ import annotations

import pytest

from shmfetch.config import CrawlConfig
from shmfetch.crawl.rules import Rules, SeenSet, digest, normalized, registrable_domain
from shmfetch.intake import Refused

CFG = CrawlConfig()


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("a.b.example.co.uk", "example.co.uk"),
        ("www.Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("foo.github.io", "foo.github.io"),  # a private suffix of the list: each user's site is its own
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("localhost", "localhost"),
    ],
)
def test_registrable_domain_follows_the_public_suffix_list(host: str, domain: str) -> None:
    assert registrable_domain(host) == domain


@pytest.mark.parametrize(
    ("seeds", "rules", "code", "words"),
    [
        ([], {}, "bad_request", "at least one seed"),
        (None, {}, "bad_request", "at least one seed"),
        (["ftp://example.com/"], {}, "invalid_url", "http(s)"),
        (["no url at all"], {}, "invalid_url", "http(s)"),
        ([""], {}, "invalid_url", "not a URL"),
        (["http://a\\@b/"], {}, "invalid_url", "backslash"),
        (["http://example.com/"], {"include": ["("]}, "bad_request", "bad regex"),
        (["http://example.com/"], {"exclude": "[a-"}, "bad_request", "bad regex"),
        (["http://example.com/"], {"depth": -1}, "bad_request", "'depth' = -1"),
        (["http://example.com/"], {"depth": "2"}, "bad_request", "integer"),
        (["http://example.com/"], {"max_pages": 100_001}, "bad_request", "'max_pages' = 100001"),
        (["http://example.com/"], {"max_pages": 0}, "bad_request", "'max_pages' = 0"),
        (["http://example.com/"], {"scope": "planet"}, "bad_request", "'scope' = 'planet'"),
        (["http://example.com/"], {"robots": "no"}, "bad_request", "true or false"),
        (["http://example.com/"], {"speed": 3}, "bad_request", "unknown crawl rule 'speed'"),
        (["http://example.com/"], [1], "bad_request", "map of rules"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(seeds, rules, code: str, words: str) -> None:
    with pytest.raises(Refused) as e:
        Rules(seeds, rules, CFG)
    assert e.value.code == code
    assert words in str(e.value)


def test_defaults_come_from_the_config_and_max_pages_from_its_cap() -> None:
    r = Rules(
        ["http://example.com/"], None, CrawlConfig(depth=3, max_pages=7, scope="domain", obey_robots=False)
    )
    assert (r.depth, r.max_pages, r.scope, r.robots) == (3, 7, "domain", False)
    assert Rules(["http://example.com/"], {"max_pages": 50}, CrawlConfig(max_pages_limit=50)).max_pages == 50
    with pytest.raises(Refused):
        Rules(["http://example.com/"], {"max_pages": 51}, CrawlConfig(max_pages_limit=50))


SEED = "http://www.example.co.uk/docs/guide/intro.html"


@pytest.mark.parametrize(
    ("scope", "url", "inside"),
    [
        ("host", "http://WWW.example.co.uk:80/other", True),
        ("host", "https://www.example.co.uk/other", False),  # another port: 443
        ("host", "http://shop.example.co.uk/", False),
        ("domain", "https://shop.example.co.uk/", True),
        ("domain", "http://example.co.uk/", True),
        ("domain", "http://other.co.uk/", False),
        ("prefix", "http://www.example.co.uk/docs/guide/next.html", True),
        ("prefix", "http://www.example.co.uk/docs/guide/deeper/x", True),
        ("prefix", "http://www.example.co.uk/docs/other", False),
        ("any", "http://elsewhere.example.org/", True),
        ("any", "mailto:someone@example.org", False),
        ("any", "ftp://example.org/file", False),
    ],
)
def test_scopes(scope: str, url: str, inside: bool) -> None:
    assert Rules([SEED], {"scope": scope}, CFG).in_scope(url, 0) is inside


def test_scope_is_judged_against_the_links_own_seed() -> None:
    r = Rules(["http://one.example/", "http://two.example/"], {"scope": "host"}, CFG)
    assert r.in_scope("http://two.example/x", 1) and not r.in_scope("http://two.example/x", 0)


def test_non_pages_are_known_by_extension_unless_included() -> None:
    r = Rules([SEED], {}, CFG)
    assert r.not_page("http://x.example/a/logo.PNG")
    assert r.not_page("http://x.example/file.tar.gz?download=1")
    assert not r.not_page("http://x.example/page.html")
    assert not r.not_page("http://x.example/dir.png/page")
    assert not r.not_page("http://x.example/report.pdf")  # the workers extract PDFs
    included = Rules([SEED], {"include": [r"\.png$"]}, CFG)
    assert not included.not_page("http://x.example/logo.png")


def test_include_and_exclude_over_the_normalized_url() -> None:
    r = Rules([SEED], {"include": ["/blog/", "/news/"], "exclude": [r"\?page="]}, CFG)
    assert r.wanted(normalized("http://x.example/blog/one"))
    assert not r.wanted(normalized("http://x.example/about"))
    assert not r.wanted(normalized("http://x.example/news/?page=2"))


def test_one_page_under_many_spellings_has_one_normalized_url() -> None:
    spellings = [
        "http://Example.COM:80/a?y=2&x=1#top",
        "http://example.com/a?x=1&y=2",
        "HTTP://example.com/a?x=1&y=2#",
        "http://example.com/%61?x=1&y=2",
    ]
    assert len({normalized(u) for u in spellings}) == 1
    assert normalized("http://example.com/a?x=1") != normalized("http://example.com/a?x=2")


def test_digests_are_stable_60_bit_keys() -> None:
    d = digest("http://example.com/")
    assert d == digest("http://example.com/") and 0 <= d < 1 << 60
    assert len({digest(f"http://example.com/{i}") for i in range(10000)}) == 10000


def test_the_shipped_config_documents_the_crawl_defaults() -> None:
    from pathlib import Path

    from shmfetch import config

    assert config.load(Path(__file__).resolve().parent.parent / "config.ini").crawl == CrawlConfig()


def test_max_pages_over_its_cap_in_the_config_is_refused(tmp_path) -> None:
    from shmfetch import config

    path = tmp_path / "c.ini"
    path.write_text("[crawl]\nmax_pages = 20\nmax_pages_limit = 10\n")
    with pytest.raises(config.ConfigError, match="max_pages_limit"):
        config.load(path)


def test_seen_set_holds_what_was_added_and_nothing_else() -> None:
    import random

    rnd = random.Random(7)
    seen, ref = SeenSet(capacity=4), set()
    for _ in range(50_000):  # many growths from a tiny table
        d = rnd.getrandbits(60)
        seen.add(d)
        ref.add(d)
    seen.add(0)
    seen.add((1 << 60) - 1)  # the extremes of a digest
    ref |= {0, (1 << 60) - 1}
    assert len(seen) == len(ref) and all(d in seen for d in ref)
    assert not any(rnd.getrandbits(60) in seen for _ in range(10_000))
    assert seen.nbytes <= 32 * len(seen)  # at most half full: 16-32 bytes a digest
