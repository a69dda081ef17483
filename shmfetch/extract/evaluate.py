"""Extraction quality: precision, recall and F1 over whitespace tokens against expected texts.

    python -m shmfetch.extract.evaluate PAGES_DIR EXPECTED_FILE [--mode text|main|markdown|trafilatura-fast]

EXPECTED_FILE is JSON Lines, one ``{"page": "NAME.html", "text": "expected text"}`` per page (tests/pages
has the shipped set, written by tools/make_eval_pages.py). Tokens are compared as multisets (a token
counts as matched as often as it occurs in both), the usual bag-of-words scoring of article extraction
benchmarks. ``--mode`` runs the daemon's own extraction code (parse once, then full text or trafilatura on
the tree); ``trafilatura-fast`` is the peer: ``trafilatura.extract(html, fast=True)`` on the page source
with the same options, as the speed benchmark's multiprocessing peer runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ..config import MODES
from .maintext import EXTRACT_OPTIONS, html_text, strip_markdown


def token_scores(got: str, expected: str) -> tuple[float, float, float]:
    """(precision, recall, F1) of ``got`` against ``expected`` over whitespace tokens (multisets)."""
    g, e = Counter(got.split()), Counter(expected.split())
    common = sum((g & e).values())
    p = common / sum(g.values()) if g else 0.0
    r = common / sum(e.values()) if e else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def load_expected(path: str | Path) -> dict[str, str]:
    """``{page file name: expected text}`` from a JSON Lines file."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                out[rec["page"]] = rec["text"]
    return out


def peer_text(html: str, url: str | None = None) -> str:
    """The peer's extraction: trafilatura parses the source itself."""
    import trafilatura

    return trafilatura.extract(html, url=url, **EXTRACT_OPTIONS) or ""


def extract_page(html: str, mode: str) -> str:
    """The page's text in ``mode``; Markdown with its syntax stripped (``strip_markdown``)."""
    if mode == "trafilatura-fast":
        return peer_text(html)
    text = html_text(html, mode, None)[0]
    return strip_markdown(text) if mode == "markdown" else text


def evaluate(
    pages: str | Path, expected_file: str | Path, mode: str
) -> list[tuple[str, float, float, float]]:
    """Scores per page, in file-name order."""
    expected = load_expected(expected_file)
    rows = []
    for name in sorted(expected):
        html = (Path(pages) / name).read_text(encoding="utf-8")
        rows.append((name, *token_scores(extract_page(html, mode), expected[name])))
    return rows


def summary(rows: list[tuple[str, float, float, float]]) -> dict[str, Any]:
    """Mean precision, recall and F1 over pages (each page weighs the same)."""
    n = len(rows) or 1
    return {
        "pages": len(rows),
        "precision": sum(r[1] for r in rows) / n,
        "recall": sum(r[2] for r in rows) / n,
        "f1": sum(r[3] for r in rows) / n,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shmfetch.extract.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("pages", help="folder of HTML pages")
    ap.add_argument("expected", help='JSON Lines file of {"page": NAME, "text": TEXT}')
    ap.add_argument("--mode", default="main", choices=(*MODES, "trafilatura-fast"))
    args = ap.parse_args(argv)
    rows = evaluate(args.pages, args.expected, args.mode)
    for name, p, r, f in rows:
        print(f"{name:40s} P={p:.3f} R={r:.3f} F1={f:.3f}")
    s = summary(rows)
    print(f"{'mean (' + args.mode + ', ' + str(s['pages']) + ' pages)':40s} P={s['precision']:.3f} "
          f"R={s['recall']:.3f} F1={s['f1']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
