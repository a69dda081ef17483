"""``shmfetch crawl``'s command line, in-process: the per-request option flags are the one shared
definition (the same as submit's), and every crawl rule has its flag."""

from __future__ import annotations

import argparse

from shmfetch.api.cli import build_parser
from shmfetch.crawl.rules import RULE_NAMES
from shmfetch.options import NAMES as OPTION_NAMES


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_crawl_takes_submits_option_flags() -> None:
    commands = _subcommands()
    flags = {
        name: {
            a.dest: (a.option_strings, a.help, a.choices)
            for a in commands[name]._actions
            if a.dest in OPTION_NAMES
        }
        for name in ("submit", "crawl")
    }
    assert set(flags["crawl"]) == set(OPTION_NAMES) and flags["crawl"] == flags["submit"]


def test_every_crawl_rule_has_a_flag() -> None:
    dests = {a.dest for a in _subcommands()["crawl"]._actions}
    assert set(RULE_NAMES) <= dests


def test_crawl_flags_parse_into_the_rules() -> None:
    args = build_parser().parse_args(
        ["crawl", "--depth", "0", "--max-pages", "3", "--scope", "prefix", "--include", "a", "--include", "b",
         "--exclude", "c", "--no-robots", "--sitemaps", "--mode", "markdown", "http://x.example/"]
    )  # fmt: skip
    assert (args.depth, args.max_pages, args.scope, args.include, args.exclude) == (
        0,
        3,
        "prefix",
        ["a", "b"],
        ["c"],
    )
    assert args.robots is False and args.sitemaps is True and args.mode == "markdown"
    defaults = build_parser().parse_args(["crawl", "http://x.example/"])
    assert (defaults.depth, defaults.max_pages, defaults.scope, defaults.robots) == (None, None, None, None)
