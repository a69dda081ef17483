"""The benchmark page set: seeded, realistic generated pages, byte-identical in every process.

``make_page(seed, i)`` builds page ``i`` from ``random.Random(seed, i)``, so the Python origin
(shmfetch/testing/origin.py, ``/p/<i>.html``), the static site written by ``tools/loadgen.py --write-site``
(served by nginx) and every peer loadgen compares see the same bytes. Sizes are log-uniform between 10 KB
and 300 KB, and the markup is what real pages carry: scripts, inline styles, a head with metadata, nested
divs, navigation lists, tables, named and numeric entities, comments, ``<pre>`` blocks and non-ASCII text.
"""

from __future__ import annotations

import math
import random

MIN_BYTES = 10_000
MAX_BYTES = 300_000

_WORDS = (
    "shared memory ring worker master request result page text extract lxml parser socket latency "
    "throughput credit round robin semaphore fragment counter journal daemon client origin session "
    "keep-alive deadline charset entity table list nested division script style markup benchmark "
    "Zürich café naïve façade Ελλάδα Москва 東京 résumé coöperate"
).split()
_ENTITIES = (
    "&amp;",
    "&lt;",
    "&gt;",
    "&quot;",
    "&nbsp;",
    "&eacute;",
    "&#8212;",
    "&#x2019;",
    "&copy;",
    "&hellip;",
)


def _sentence(rnd: random.Random) -> str:
    words = [rnd.choice(_WORDS) for _ in range(rnd.randint(6, 18))]
    if rnd.random() < 0.5:
        words.insert(rnd.randrange(len(words)), rnd.choice(_ENTITIES))
    if rnd.random() < 0.3:
        j = rnd.randrange(len(words))
        words[j] = f'<a href="/p/{rnd.randrange(1000)}.html">{words[j]}</a>'
    if rnd.random() < 0.2:
        j = rnd.randrange(len(words))
        words[j] = f"<b>{words[j]}</b>"
    return " ".join(words).capitalize() + "."


def _script(rnd: random.Random) -> str:
    body = "".join(
        f"var v{k}={rnd.randrange(10**6)};function f{k}(a,b){{return a<b?a:b&&'x'}}\n"
        for k in range(rnd.randint(5, 60))
    )
    return f"<script>{body}</script>"


def _style(rnd: random.Random) -> str:
    rules = "".join(
        f".c{k} > div{{margin:{rnd.randrange(20)}px;color:#{rnd.randrange(1 << 24):06x}}}\n"
        for k in range(rnd.randint(5, 40))
    )
    return f"<style>{rules}</style>"


def _table(rnd: random.Random) -> str:
    cols = rnd.randint(3, 7)
    head = "".join(f"<th>{rnd.choice(_WORDS)}</th>" for _ in range(cols))
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{rnd.choice(_WORDS)} {rnd.randrange(10**5)}</td>" for _ in range(cols))
        + "</tr>"
        for _ in range(rnd.randint(5, 40))
    )
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _list(rnd: random.Random) -> str:
    tag = rnd.choice(("ul", "ol"))
    items = "".join(f"<li>{_sentence(rnd)}</li>" for _ in range(rnd.randint(3, 15)))
    return f"<{tag}>{items}</{tag}>"


def _nested(rnd: random.Random, depth: int) -> str:
    inner = "".join(f"<p>{_sentence(rnd)}</p>" for _ in range(rnd.randint(1, 4)))
    if depth > 0:
        inner += _nested(rnd, depth - 1)
    return f'<div class="c{depth}"><span class="label">{rnd.choice(_WORDS)}</span>{inner}</div>'


def _block(rnd: random.Random) -> str:
    r = rnd.random()
    if r < 0.35:
        return _nested(rnd, rnd.randint(1, 8))
    if r < 0.5:
        return _table(rnd)
    if r < 0.65:
        return _list(rnd)
    if r < 0.75:
        return _script(rnd)
    if r < 0.8:
        return _style(rnd)
    if r < 0.85:
        return f"<pre>  {_sentence(rnd)}\n\tindented {rnd.randrange(999)}\n</pre>"
    if r < 0.9:
        return f"<!-- {_sentence(rnd)} -->"
    h = rnd.randint(2, 4)
    return f"<h{h}>{_sentence(rnd)}</h{h}>"


def page_size(seed: int, i: int, min_bytes: int = MIN_BYTES) -> int:
    """Target size of page ``i``: log-uniform in [min_bytes, MAX_BYTES]."""
    rnd = random.Random(f"{seed}/{i}/size")
    return int(math.exp(rnd.uniform(math.log(min_bytes), math.log(MAX_BYTES))))


def make_page(seed: int, i: int, min_bytes: int = MIN_BYTES) -> bytes:
    """Page ``i`` of the set for ``seed``: byte-identical on every call and in every process.

    ``min_bytes=50_000`` gives the news-article set (50-300 KB, 170 KB on average)."""
    rnd = random.Random(f"{seed}/{i}")
    target = page_size(seed, i, min_bytes)
    nav = "".join(
        f'<li><a href="/p/{k}.html">{rnd.choice(_WORDS)}</a></li>' for k in range(rnd.randint(8, 30))
    )
    parts = [
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>",
        f"<title>Page {i} &mdash; {rnd.choice(_WORDS)}</title>",
        '<meta name="viewport" content="width=device-width"><link rel="stylesheet" href="/s.css">',
        _style(rnd),
        _script(rnd),
        f'</head><body><header><nav><ul class="nav">{nav}</ul></nav></header><main><h1>Page {i}</h1>',
    ]
    size = sum(len(p) for p in parts)
    while size < target:
        b = _block(rnd)
        parts.append(b)
        size += len(b)
    parts.append(f"</main><footer><p>&copy; 2026 page {i}</p>{_script(rnd)}</footer></body></html>\n")
    return "".join(parts).encode("utf-8")


# A small page for per-request overhead figures (P5): fetch and extraction cost little, so what the daemon
# adds stands out.
SMALL_PATH = "/small.html"
SMALL_PAGE = (
    b"<!DOCTYPE html><html><head><title>small</title><script>var x=1;</script></head><body>"
    b"<h1>Small page</h1><p>A few words &amp; an entity.</p><ul><li>one</li><li>two</li></ul></body></html>\n"
)


def page_path(i: int) -> str:
    return f"/p/{i}.html"
