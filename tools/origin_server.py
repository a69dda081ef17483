"""A fast HTTP origin on 127.0.0.1 for tools/loadgen.py: a seeded set of realistic generated pages.

Runs in its own process (so its event loop never shares a GIL with the load generator or the peers it is
compared with) and serves ``/p/<i>.html`` for ``i`` in ``0 … pages-1`` from memory with aiohttp, after
sleeping ``--latency-ms`` per response (an ``asyncio.sleep``: latency costs the origin no CPU and no
thread, so 100 ms with a thousand requests in flight is still cheap). Prints ``PORT <n>`` on stdout once it
listens, then serves until SIGTERM/SIGINT.

The page set is deterministic for a given ``--seed``: page ``i`` is built from ``random.Random(seed, i)``,
so the loadgen's own origin, the static site written by ``loadgen.py --write-site`` (served by nginx) and
every peer see byte-identical pages. Sizes are log-uniform between 10 KB and 300 KB, and the markup is what
real pages carry: scripts, inline styles, a head with metadata, nested divs, navigation lists, tables,
named and numeric entities, comments, ``<pre>`` blocks and non-ASCII text.

    python tools/origin_server.py --pages 200 --latency-ms 100 --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import signal
import sys

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

    ``min_bytes=50_000`` gives the news-article set of issue 11 (50-300 KB, 170 KB on average)."""
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


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web  # the bench extra; imported here so make_page works without it

    pages = [make_page(args.seed, i, args.min_kb * 1000) for i in range(args.pages)]
    delay = args.latency_ms / 1000.0

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            body = pages[int(name)]
        except (ValueError, IndexError):
            raise web.HTTPNotFound() from None
        if delay:
            await asyncio.sleep(delay)
        headers = {"X-Page": name}
        if args.cache_control:  # cacheable pages, for the HTTP cache benchmark (tools/bench_polite.py)
            headers["Cache-Control"] = args.cache_control
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)

    app = web.Application()

    async def small(request: web.Request) -> web.Response:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=SMALL_PAGE, content_type="text/html", charset="utf-8")

    app.router.add_get("/p/{name}.html", handle)
    app.router.add_get(SMALL_PATH, small)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=4096, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=200, help="pages in the set (default 200)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the page set (default 1)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="delay before each response")
    ap.add_argument("--cache-control", default="", help="a Cache-Control header on every page (default none)")
    ap.add_argument(
        "--min-kb", type=int, default=MIN_BYTES // 1000, help="smallest page (default 10; news: 50)"
    )
    ap.add_argument("--host", default="127.0.0.1", help="loopback only (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        ap.error("the origin binds to loopback only")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
