"""The one Python HTTP origin of tests and tools: hostile where tests need it, real sockets, threaded.

    with start_origin() as o:                 # in this process, 127.0.0.1, a free port
        url = o.url("/page?size=20000")
    with OriginProcess(pages=200, latency_ms=100) as o:   # in its own process (benchmarks): no shared GIL
        urls = o.urls

``python -m shmfetch.testing.origin --help`` runs it alone (it prints ``PORT <n>`` once it listens).

Routes (query parameters in brackets; every loop is bounded in count and stops when the origin stops):

  /page[?size=N&title=T]      valid HTML page of about N bytes; its text is ``page_text(N, T)``
  /page/I                     a tiny page with a script and a style; its text is ``numbered_text(I)``
  /text?bytes=N               N bytes of text/plain (99-character lines)
  /status/CODE                status CODE with an HTML body ``<p>status CODE</p>`` (text "status CODE")
  /echo-text?t=..[&ctype=..&as=E]  body t (in codec E, default UTF-8) with that Content-Type (default
                              text/plain; charset=utf-8); ``ctype=none`` sends no Content-Type
  /set-cookie?v=V             a small page with ``Set-Cookie: session=V; Path=/``
  /slow[?s=S]                 waits S seconds, then a small page
  /drip[?n=N&delay=D]         headers at once, then an N-byte body one byte every D seconds
  /drip-headers[?delay=D]     the status line and headers themselves one byte every D seconds
  /gzip-bomb[?mb=M]           M MB (default 10) of gzip that inflates to ~1000*M MB of zeros, text/html,
                              generated on the fly from one repeated full-flush block
  /br-bomb[?gb=G]             brotli stream of G GB (default 10) of zeros, text/html
  /gzip, /deflate[?raw=1], /br, /gzip-br  a page compressed with that coding; text ``page_text(20000)``
  /stacked?n=N                ``Content-Encoding: gzip, gzip, ...`` (N times); the body is gzipped
                              min(N, 8) times (beyond 8 it could not be decoded anyway: the cap is lower)
  /bad-encoding?coding=C      a corrupt body labelled with Content-Encoding C (gzip, br, zstd, ...)
  /endless[?mb=M]             text/plain body of at most M MB (default 1024), no Content-Length
  /redirect-loop              302 to itself
  /redirect-chain?n=N         N redirects, then /page?size=2000
  /redirect-to?url=U[&code=C] one redirect to U
  /flaky?key=K&fails=N[&code=C]  the first N requests for key K get C (default 503), then a page
  /retry-after?key=K&after=S[&date=1]  the first request for K gets 429 with Retry-After, then a page
  /reset[?key=K&fails=N]      the connection is reset (RST) (the first N times for K, if given)
  /close-early                headers promise 100000 bytes, the connection closes after 10
  /binary-html                random bytes with NULs, served as text/html
  /charset?enc=E&mode=header|meta|none[&bom=1]  a page with ``SAMPLES[E]`` encoded in E
  /ctype/NAME                 pdf, png, jpeg, octet, video, xml, rss, atom, plain, xhtml, svg (+xml), json
  /sniff/NAME                 no Content-Type: html, xml, png, pdf, text
  /extract/NAME               pages of EXTRACT_CASES (HTML, expected text)
  /pages/NAME                 the file NAME (.html) of the origin's ``pages_dir``: the content-mode
                              evaluation pages tests/pages (tools/make_eval_pages.py), the demo site
  /p/I.html                   page I of the seeded benchmark page set (pageset.py), when the origin has one;
                              with Cache-Control ``cache_control`` if set; /small.html: pageset.SMALL_PAGE
  /tree/F/I                   page I of a tree of fan-out F (``tree_page``): a crawl's benchmark site
  /headers                    the request headers, one "Name: value" per line (text/plain)
  /hits?key=K                 how many requests key K has had (text/plain)
  /cacheable?key=K[&cc=..&etag=E&lm=HTTP-DATE&expires=HTTP-DATE&v=V&meta=1]  a page with those cache headers
                              (Cache-Control, ETag, Last-Modified, Expires; meta=1: lang and a
                              description too); 304 when If-None-Match is E
                              or If-Modified-Since is LM; hits counted as K and, for 304s, K:304;
                              its text is ``numbered_text(V)`` (V default 1)

Every origin records each request's path, start and end times (``Origin.log``) and the most requests it
served at once (``Origin.max_concurrent``): the politeness tests judge the daemon by these. ``Origin(host=
"127.0.0.2")`` listens on another loopback address, which the daemon treats as another host.
``latency`` (seconds) delays every response, as a distant origin would.
``Origin.respond(path, status, body, headers, delay)`` overrides one exact path (robots.txt cases).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli

from . import pageset

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def _para(i: int) -> str:
    return f"Paragraph {i}: " + " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(40)) + "."


def _page(size: int, title: str) -> tuple[str, str]:
    head = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font:14px sans-serif} .x>p{margin:0}</style>"
        "<script>var data = {a: '<p>not text</p>'}; function f(){return 1 < 2;}</script></head><body>"
        "<nav><ul><li><a href='/'>Home</a></li><li><a href='/b'>About</a></li></ul></nav>"
    )
    parts, lines = [head], [title, "Home", "About"]
    n, i = len(head), 0
    while n < size - 200 or i == 0:
        if i % 5:
            p = f"<p>{_para(i)}</p>\n"
            lines.append(_para(i))
        else:
            p = f"<table><tr><td>cell {i}</td><td>value &amp; {i}</td></tr></table>"
            lines.append(f"cell {i}\tvalue & {i}")
        parts.append(p)
        n += len(p)
        i += 1
    parts.append("<footer>The end.</footer></body></html>")
    lines.append("The end.")
    return "".join(parts), "\n".join(lines)


def page_html(size: int, title: str = "Test page") -> str:
    """A realistic page of about ``size`` bytes: head with scripts/styles, nav, paragraphs, tables."""
    return _page(size, title)[0]


def numbered_html(i: int) -> str:
    return (
        f"<html><head><script>x()</script><style>p{{}}</style></head>"
        f"<body><h1>Page {i}</h1><p>This is page number {i}.</p></body></html>"
    )


def numbered_text(i: int) -> str:
    """The text of ``/page/I``."""
    return f"Page {i}\nThis is page number {i}."


def tree_page(fanout: int, i: int) -> str:
    """``/tree/F/I``: page I of an endless tree of fan-out F (a crawl's benchmark site): links to its F
    children (I*F+1 .. I*F+F), to its parent and to the root, as site navigation does, and ~8 KB of text."""
    up = max(0, (i - 1) // fanout)
    nav = f"<nav><a href='/tree/{fanout}/0'>Home</a> <a href='/tree/{fanout}/{up}'>Up</a></nav>"
    kids = "".join(
        f"<li><a href='/tree/{fanout}/{i * fanout + k}'>Page {i * fanout + k}</a></li>" for k in range(1, fanout + 1)
    )
    text = "".join(f"<p>{_para(i + k)}</p>" for k in range(30))
    head = f"<!DOCTYPE html><html><head><title>Tree {i}</title></head>"
    return f"{head}<body>{nav}<ul>{kids}</ul>{text}</body></html>"


def page_text(size: int, title: str = "Test page") -> str:
    """The exact text shmfetch extracts from ``/page?size=size&title=title``."""
    return _page(size, title)[1]


# Realistic text per encoding: a few sentences, enough for detection of undeclared pages.
SAMPLES: dict[str, str] = {
    "windows-1251": (
        "Съешь же ещё этих мягких французских булок, да выпей чаю. В чащах юга жил бы цитрус? Да, но "
        "фальшивый экземпляр! Москва является столицей Российской Федерации и крупнейшим городом страны. "
        "Город расположен на реке Москве в центре Восточно-Европейской равнины."
    ),
    "koi8-r": (
        "Широкая электрификация южных губерний даст мощный толчок подъёму сельского хозяйства. "
        "Санкт-Петербург был основан Петром Первым в начале восемнадцатого века на берегах Невы. "
        "Сегодня это второй по численности населения город России и важный культурный центр."
    ),
    "shift_jis": (
        "東京は日本の首都であり、世界でも有数の大都市です。多くの人々が毎日電車で通勤しています。"
        "春には桜が咲き、公園は花見を楽しむ人々でにぎわいます。日本の食文化も世界中で人気があります。"
    ),
    "euc-jp": (
        "京都は長い歴史を持つ古都で、多くの寺院や神社があります。毎年たくさんの観光客が訪れます。"
        "秋になると紅葉がとても美しく、庭園の景色を楽しむことができます。伝統的な祭りも有名です。"
    ),
    "gb2312": (
        "北京是中华人民共和国的首都，也是全国的政治和文化中心。这座城市有三千多年的历史，"
        "拥有许多著名的古迹，例如故宫、天坛和长城。每年都有大量的游客来这里参观和学习。"
    ),
    "big5": (
        "臺北是臺灣最大的城市之一，擁有豐富的文化與美食。夜市是當地人和遊客最喜歡的地方，"
        "可以品嚐各種傳統小吃。這座城市的交通非常方便，捷運系統連接了許多重要的地區。"
    ),
    "euc-kr": (
        "서울은 대한민국의 수도이며 가장 큰 도시입니다. 한강이 도시의 중심을 흐르고 있습니다. "
        "많은 사람들이 지하철을 이용하여 출근하고, 주말에는 공원에서 휴식을 즐깁니다. "
        "서울에는 오래된 궁궐과 현대적인 건물이 함께 있어 독특한 풍경을 만듭니다."
    ),
    "iso-8859-7": (
        "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και μία από τις αρχαιότερες πόλεις του κόσμου. "
        "Η Ακρόπολη βρίσκεται στο κέντρο της πόλης και την επισκέπτονται χιλιάδες τουρίστες κάθε χρόνο. "
        "Ο ελληνικός πολιτισμός έχει επηρεάσει βαθιά τη φιλοσοφία, την τέχνη και την επιστήμη."
    ),
    "utf-16-le": (
        "Unicode text in UTF-16: Grüße aus Köln, Ελληνικά, Русский, 日本語, 한국어 and some plain English "
        "sentences so that there is enough text to look like a real page about many languages."
    ),
    "utf-16-be": (
        "Big-endian UTF-16 page: Straße, café, naïve, Ελλάδα, Москва, 東京, 서울. This paragraph is long "
        "enough to resemble a short article about cities of the world and their names."
    ),
}


def charset_page(enc: str, mode: str) -> str:
    """The HTML of /charset (before encoding). Its extracted text is ``"Title\\n" + SAMPLES[enc]``."""
    meta = f'<meta http-equiv="Content-Type" content="text/html; charset={enc}">' if mode == "meta" else ""
    if enc.startswith("utf-16") and mode == "meta":
        meta = f'<meta charset="{enc.split("-")[0]}-{enc.split("-")[1]}">'
    return f"<html><head>{meta}<title>Title</title></head><body><p>{SAMPLES[enc]}</p></body></html>"


# (HTML, expected text) for /extract/NAME and tests/test_extract_html.py.
EXTRACT_CASES: dict[str, tuple[str, str]] = {
    "scripts": (
        "<html><head><title>T</title><script>alert('x')</script><style>p{color:red}</style>"
        "<meta name=description content='meta text'><link rel=stylesheet href=x.css></head>"
        "<body><script type='text/template'><p>tpl</p></script><p>Visible</p>"
        "<template><p>not shown</p></template></body></html>",
        "T\nVisible",
    ),
    "blocks": (
        "<div>one<div>two</div>three</div><p>four</p><ul><li>five</li><li>six</li></ul>"
        "<h1>seven</h1><h6>eight</h6><section>nine</section><article>ten</article><header>h</header>"
        "<footer>f</footer><nav>n</nav><blockquote>q</blockquote><dl><dt>term</dt><dd>def</dd></dl>"
        "<form>form</form>a<hr>b<ol><li>x</li></ol>",
        "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\nh\nf\nn\nq\nterm\ndef\nform\na\nb\nx",
    ),
    "inline": ("<p>a<b>b</b><i>c</i> <span>d</span><a href=x>e</a></p>", "abc de"),
    "br": ("<p>line one<br>line two<br/>line three</p>", "line one\nline two\nline three"),
    "table": (
        "<table><tr><th>Name</th><th>Age</th></tr><tr><td>Ann</td><td>31</td></tr>"
        "<tr><td> Bob </td><td>7</td></tr></table>",
        "Name\tAge\nAnn\t31\nBob\t7",
    ),
    "pre": (
        "<p>before   spaces</p><pre>  x = 1\n\n    y =\t2\n</pre><p>after</p>",
        "before spaces\n  x = 1\n\n    y =\t2\n\nafter",
    ),
    "whitespace": ("<p>  lots \n\n of\t\t space  </p>", "lots of space"),
    "entities": (
        "<p>a&amp;b &lt;c&gt; &quot;d&quot; &#233;&#x20AC; &copy; x&nbsp;y&nbsp;&nbsp;z</p>",
        'a&b <c> "d" é€ © x y z',
    ),
    "noscript": ("<p>A</p><noscript><p>Enable JavaScript</p></noscript><p>B</p>", "A\nB"),
    "comments": ("<p>a<!-- hidden --></p><?php echo 1 ?><p>b</p>", "a\nb"),
    "broken": (
        "<p>unclosed <b>bold <div>x<table><td>cell<p>para</i></span></zzz>",
        "unclosed bold\nx\ncell\npara",
    ),
    "title_only": ("<html><head><title>  Only   title </title></head><body></body></html>", "Only title"),
    "empty": ("", ""),
}
NOSCRIPT_KEEP_TEXT = "A\nEnable JavaScript\nB"


def _lingering_reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes: with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers, 40 ms a response on Linux (a keep-alive origin at 22 pages/s).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def _send(
        self, code: int, body: bytes, ctype: str | None = "text/html; charset=utf-8", **hdrs: str
    ) -> None:
        self.send_response(code)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        # The response is over, as a client can see it, once its last bytes are handed to the socket:
        # close the request's count before that write. Counting it after (in do_GET's finally) races with
        # a client that starts its next request the moment it has the body, and reads as overlap.
        self._end_count()
        self.wfile.write(body)

    def _stream(self, ctype: str, chunks: Iterator[bytes], **hdrs: str) -> None:
        """A body without Content-Length, ended by closing the connection."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Connection", "close")
        for k, v in hdrs.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        try:
            for c in chunks:
                if self.server.stopping.is_set():
                    break
                self.wfile.write(c)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def _count(self, key: str) -> int:
        with self.server.lock:
            self.server.hits[key] = self.server.hits.get(key, 0) + 1
            return self.server.hits[key]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        with srv.lock:
            srv.active += 1
            srv.max_concurrent = max(srv.max_concurrent, srv.active)
            self._entry: list | None = [self.path, time.monotonic(), None]
            if srv.recording:
                srv.log.append(self._entry)
        try:
            self._route()
        finally:
            self._end_count()

    def _end_count(self) -> None:
        """This request no longer counts as being served (once per request)."""
        with self.server.lock:
            if self._entry is not None:
                self.server.active -= 1
                self._entry[2] = time.monotonic()
                self._entry = None

    def _route(self) -> None:
        if self.server.latency:
            self.server.stopping.wait(self.server.latency)
        fixed = self.server.fixed.get(self.path)
        if fixed is not None:
            status, body, headers, delay = fixed
            if delay:
                self.server.stopping.wait(delay)
            hdrs = dict(headers)
            ctype = hdrs.pop("Content-Type", "text/plain")
            self._send(status, body, ctype, **hdrs)
            return
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        parts = u.path.strip("/").split("/")
        route = getattr(self, "r_" + parts[0].replace("-", "_"), None)
        if route is None:
            self._send(404, b"<html><body><h1>Not found</h1><p>No such page.</p></body></html>")
            return
        route(parts, q)

    # -- general routes ------------------------------------------------------------------------

    def r_page(self, parts: list[str], q: dict[str, str]) -> None:
        if len(parts) > 1:
            self._send(200, numbered_html(int(parts[1])).encode())
            return
        self._send(200, page_html(int(q.get("size", "2000")), q.get("title", "Test page")).encode())

    def r_text(self, parts: list[str], q: dict[str, str]) -> None:
        n = int(q.get("bytes", "1024"))
        line = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 3)[:99] + b"\n"
        self._send(200, (line * (n // len(line) + 1))[:n], "text/plain; charset=utf-8")

    def r_status(self, parts: list[str], q: dict[str, str]) -> None:
        code = int(parts[1])
        self._send(code, f"<p>status {code}</p>".encode())

    def r_echo_text(self, parts: list[str], q: dict[str, str]) -> None:
        ctype = q.get("ctype", "text/plain; charset=utf-8")
        self._send(200, q.get("t", "").encode(q.get("as", "utf-8")), None if ctype == "none" else ctype)

    def r_set_cookie(self, parts: list[str], q: dict[str, str]) -> None:
        self._send(200, b"<p>logged in</p>", Set_Cookie=f"session={q.get('v', 'x')}; Path=/")

    def r_slow(self, parts: list[str], q: dict[str, str]) -> None:
        self.server.stopping.wait(float(q.get("s", "1")))
        self._send(200, b"<p>slow</p>")

    def r_cacheable(self, parts: list[str], q: dict[str, str]) -> None:
        key = q.get("key", "cacheable")
        self._count(key)
        hdrs = {}
        for name, header in (("cc", "Cache-Control"), ("etag", "ETag"), ("lm", "Last-Modified"),
                             ("expires", "Expires")):  # fmt: skip
            if name in q:
                hdrs[header] = q[name]
        etag, lm = q.get("etag"), q.get("lm")
        if (etag and self.headers.get("If-None-Match") == etag) or (
            lm and not etag and self.headers.get("If-Modified-Since") == lm
        ):
            self._count(key + ":304")
            self.send_response(304)
            for k, v in hdrs.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        v = int(q.get("v", "1"))
        body = numbered_html(v)
        if q.get("meta"):  # page fields without changing the page's text
            body = body.replace(
                "<html><head>", f"<html lang='en'><head><meta name='description' content='Cached {v}'>"
            )
        self._send(200, body.encode(), **{k.replace("-", "_"): v for k, v in hdrs.items()})

    def r_headers(self, parts: list[str], q: dict[str, str]) -> None:
        body = "".join(f"{k}: {v}\n" for k, v in self.headers.items())
        self._send(200, body.encode(), "text/plain; charset=utf-8")

    def r_hits(self, parts: list[str], q: dict[str, str]) -> None:
        with self.server.lock:
            n = self.server.hits.get(q.get("key", ""), 0)
        self._send(200, str(n).encode(), "text/plain")

    # -- slow and big ---------------------------------------------------------------------------

    def r_drip(self, parts: list[str], q: dict[str, str]) -> None:
        n, delay = int(q.get("n", "30")), float(q.get("delay", "1"))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        self.wfile.flush()
        try:
            for _ in range(n):
                if self.server.stopping.wait(delay):
                    break
                self.wfile.write(b"x")
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def r_drip_headers(self, parts: list[str], q: dict[str, str]) -> None:
        delay = float(q.get("delay", "1"))
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Pad: " + b"p" * 60 + b"\r\n\r\nok"
        self.close_connection = True
        try:
            for b in head:
                if self.server.stopping.wait(delay):
                    break
                self.connection.sendall(bytes([b]))
        except OSError:
            pass

    def r_gzip_bomb(self, parts: list[str], q: dict[str, str]) -> None:
        mb = float(q.get("mb", "10"))
        first, block = self.server.gzip_blocks()

        def gen() -> Iterator[bytes]:
            yield first
            sent = len(first)
            while sent < mb * 1e6:
                yield block
                sent += len(block)

        self._stream("text/html", gen(), Content_Encoding="gzip")

    def r_br_bomb(self, parts: list[str], q: dict[str, str]) -> None:
        gb = float(q.get("gb", "10"))
        zeros = bytes(1 << 20)

        def gen() -> Iterator[bytes]:
            c = brotli.Compressor(quality=1)
            for _ in range(int(gb * 1024)):
                out = c.process(zeros) + c.flush()
                if out:
                    yield out
            yield c.finish()

        self._stream("text/html", gen(), Content_Encoding="br")

    def r_endless(self, parts: list[str], q: dict[str, str]) -> None:
        mb = int(q.get("mb", "1024"))
        line = os.urandom(32).hex().encode() + b"\n"
        block = line * (65536 // len(line))
        self._stream("text/plain", (block for _ in range(mb * 16)))

    def _compressed(self, coding: str, raw: bool = False) -> None:
        body = page_html(20000).encode()
        if coding == "gzip":
            c = zlib.compressobj(6, zlib.DEFLATED, 31)
            data = c.compress(body) + c.flush()
        elif coding == "deflate":
            c = zlib.compressobj(6, zlib.DEFLATED, -15 if raw else 15)
            data = c.compress(body) + c.flush()
        elif coding == "br":
            data = brotli.compress(body)
        else:  # "gzip, br": gzip applied first, then brotli
            c = zlib.compressobj(6, zlib.DEFLATED, 31)
            data = brotli.compress(c.compress(body) + c.flush())
        self._send(200, data, Content_Encoding=coding)

    def r_gzip(self, parts: list[str], q: dict[str, str]) -> None:
        self._compressed("gzip")

    def r_deflate(self, parts: list[str], q: dict[str, str]) -> None:
        self._compressed("deflate", raw=q.get("raw") == "1")

    def r_br(self, parts: list[str], q: dict[str, str]) -> None:
        self._compressed("br")

    def r_gzip_br(self, parts: list[str], q: dict[str, str]) -> None:
        self._compressed("gzip, br")

    def r_stacked(self, parts: list[str], q: dict[str, str]) -> None:
        n = int(q.get("n", "1"))
        data = page_html(2000).encode()
        for _ in range(min(n, 8)):
            c = zlib.compressobj(6, zlib.DEFLATED, 31)
            data = c.compress(data) + c.flush()
        self._send(200, data, Content_Encoding=", ".join(["gzip"] * n))

    def r_bad_encoding(self, parts: list[str], q: dict[str, str]) -> None:
        coding = q.get("coding", "gzip")
        self._send(200, b"\x1f\x8b\x08\x00garbage, not a gzip stream" * 10, Content_Encoding=coding)

    # -- redirects and retries ------------------------------------------------------------------

    def r_redirect_loop(self, parts: list[str], q: dict[str, str]) -> None:
        self._send(302, b"loop", "text/plain", Location="/redirect-loop")

    def r_redirect_chain(self, parts: list[str], q: dict[str, str]) -> None:
        n = int(q.get("n", "3"))
        loc = f"/redirect-chain?n={n - 1}" if n > 1 else "/page?size=2000"
        self._send(301 if n % 2 else 307, b"", "text/plain", Location=loc)

    def r_redirect_to(self, parts: list[str], q: dict[str, str]) -> None:
        self._send(int(q.get("code", "302")), b"", "text/plain", Location=q["url"])

    def r_flaky(self, parts: list[str], q: dict[str, str]) -> None:
        n = self._count(q["key"])
        if n <= int(q.get("fails", "1")):
            self._send(int(q.get("code", "503")), b"<p>try again</p>")
        else:
            self._send(200, b"<p>finally</p>")

    def r_retry_after(self, parts: list[str], q: dict[str, str]) -> None:
        n = self._count(q["key"])
        if n == 1:
            after = float(q.get("after", "1"))
            if q.get("date"):
                import email.utils
                import time

                value = email.utils.formatdate(time.time() + after, usegmt=True)
            else:
                value = str(int(after))
            self._send(429, b"<p>slow down</p>", Retry_After=value)
        else:
            self._send(200, b"<p>welcome back</p>")

    def r_reset(self, parts: list[str], q: dict[str, str]) -> None:
        if "key" in q and self._count(q["key"]) > int(q.get("fails", "1")):
            self._send(200, b"<p>recovered</p>")
            return
        self.close_connection = True
        _lingering_reset(self.connection)

    def r_close_early(self, parts: list[str], q: dict[str, str]) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        _lingering_reset(self.connection)

    # -- content ---------------------------------------------------------------------------------

    def r_binary_html(self, parts: list[str], q: dict[str, str]) -> None:
        self._send(200, bytes(range(256)) * 64 + os.urandom(4096), "text/html")

    def r_charset(self, parts: list[str], q: dict[str, str]) -> None:
        enc, mode = q["enc"], q.get("mode", "header")
        body = charset_page(enc, mode).encode(enc)
        if q.get("bom"):
            body = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(enc, b"\xef\xbb\xbf") + body
        ctype = f"text/html; charset={enc}" if mode == "header" else "text/html"
        self._send(200, body, ctype)

    CTYPES: dict[str, tuple[str, bytes]] = {
        "pdf": ("application/pdf", b"%PDF-1.4\n" + bytes(range(256)) * 400),
        "png": ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(100000)),
        "jpeg": ("image/jpeg", b"\xff\xd8\xff" + bytes(1000)),
        "octet": ("application/octet-stream", bytes(range(256)) * 100),
        "video": ("video/mp4", bytes(100000)),
        "json": ("application/json", b'{"a": 1}'),
        "xml": (
            "application/xml",
            b"<?xml version='1.0'?><root><a>First</a><b>Second <c>third</c></b></root>",
        ),
        "textxml": ("text/xml; charset=utf-8", b"<root><a>Text XML</a></root>"),
        "rss": (
            "application/rss+xml",
            b"<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Feed</title>"
            b"<item><title>Item one</title><description>&lt;p&gt;Desc&lt;/p&gt;</description></item>"
            b"</channel></rss>",
        ),
        "atom": (
            "application/atom+xml",
            b"<feed xmlns='http://www.w3.org/2005/Atom'><title>Atom feed</title><entry><title>Entry"
            b"</title><summary>Sum</summary></entry></feed>",
        ),
        "svg": ("image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg'><text>Label</text></svg>"),
        "plain": ("text/plain; charset=utf-8", "Plain text\n  kept   as is: <p>not html</p> é\n".encode()),
        "xhtml": (
            "application/xhtml+xml",
            b"<?xml version='1.0' encoding='utf-8'?><html xmlns='http://www.w3.org/1999/xhtml'><head>"
            b"<title>X</title></head><body><p>XHTML body</p><br/><p>two</p></body></html>",
        ),
    }

    def r_ctype(self, parts: list[str], q: dict[str, str]) -> None:
        ctype, body = self.CTYPES[parts[1]]
        self._send(int(q.get("code", "200")), body, ctype)

    SNIFF: dict[str, bytes] = {
        "html": b"  <!DOCTYPE html><html><body><p>Sniffed HTML</p></body></html>",
        "xml": b"<?xml version='1.0'?><doc><p>Sniffed XML</p></doc>",
        "png": b"\x89PNG\r\n\x1a\n" + bytes(5000),
        "pdf": b"%PDF-1.7\n" + bytes(range(256)) * 10,
        "text": b"Just some plain text.\nSecond line.",
    }

    def r_sniff(self, parts: list[str], q: dict[str, str]) -> None:
        self._send(200, self.SNIFF[parts[1]], None)

    def r_extract(self, parts: list[str], q: dict[str, str]) -> None:
        self._send(200, EXTRACT_CASES[parts[1]][0].encode())

    def r_pages(self, parts: list[str], q: dict[str, str]) -> None:
        name = parts[1] if len(parts) > 1 else ""
        root = self.server.pages_dir
        path = root / name if root else None
        if path is None or "/" in name or not name.endswith(".html") or not path.is_file():
            self._send(404, b"<p>no such page</p>")
            return
        self._send(200, path.read_bytes())


    def r_tree(self, parts: list[str], q: dict[str, str]) -> None:
        try:
            fanout, i = int(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            self._send(404, b"<p>no such page</p>")
            return
        self._send(200, tree_page(fanout, i).encode())

    def r_p(self, parts: list[str], q: dict[str, str]) -> None:
        pages = self.server.pageset
        try:
            body = pages[int(parts[1].removesuffix(".html"))]
        except (IndexError, ValueError):
            self._send(404, b"<p>no such page</p>")
            return
        hdrs = {"Cache_Control": self.server.cache_control} if self.server.cache_control else {}
        self._send(200, body, X_Page=parts[1].removesuffix(".html"), **hdrs)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096  # benchmarks open hundreds of connections at once

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.pages_dir: Path | None = None
        self.pageset: list[bytes] = []
        self.cache_control = ""
        self.latency = 0.0
        self.recording = True  # Origin.log; off for a long benchmark, where it would only grow
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.max_concurrent = 0
        self.log: list[list] = []  # [path, start, end] per request, in arrival order
        self.fixed: dict[str, tuple[int, bytes, dict[str, str], float]] = {}
        self.hits: dict[str, int] = {}
        self.connections = 0  # TCP connections accepted (keep-alive and SSRF tests)
        self._gz: tuple[bytes, bytes] | None = None

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hanging up (resets, bombs cut short) are the point of this server, not errors.
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def gzip_blocks(self) -> tuple[bytes, bytes]:
        """Header + first block, and a block that repeats verbatim after a full flush (1 MB of zeros each)."""
        with self.lock:
            if self._gz is None:
                zeros = bytes(1 << 20)
                c = zlib.compressobj(9, zlib.DEFLATED, 31)
                first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
                block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
                self._gz = (first, block)
            return self._gz


class Origin:
    """A running origin. ``url(path)`` builds an absolute URL; ``stop()`` ends it (idempotent).

    With ``tls=(certfile, keyfile)`` it speaks HTTPS (see ``make_cert``). ``pages_dir`` is served under
    /pages/; ``page_set=(pages, seed, min_kb)`` builds that benchmark page set for /p/I.html (and
    /small.html); ``latency`` delays every response by that many seconds.
    """

    def __init__(
        self,
        tls: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
        *,
        port: int = 0,
        pages_dir: Path | None = None,
        page_set: tuple[int, int, int] | None = None,
        cache_control: str = "",
        latency: float = 0.0,
        record: bool = True,
    ) -> None:
        self.httpd = _Server(host, port)
        self.httpd.pages_dir = pages_dir
        self.httpd.cache_control = cache_control
        self.httpd.latency = latency
        self.httpd.recording = record
        if page_set:
            pages, seed, min_kb = page_set
            self.httpd.pageset = [pageset.make_page(seed, i, min_kb * 1000) for i in range(pages)]
            html = {"Content-Type": "text/html; charset=utf-8"}
            self.respond(pageset.SMALL_PATH, 200, pageset.SMALL_PAGE, html)
        self.scheme = "http"
        if tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.host = host
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="origin", daemon=True
        )
        self.thread.start()
        self._stopped = False

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def respond(
        self,
        path: str,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        delay: float = 0,
    ) -> None:
        """Answer requests for exactly ``path`` with this status, body and headers, after ``delay`` s."""
        with self.httpd.lock:
            self.httpd.fixed[path] = (status, body, dict(headers or {}), delay)

    @property
    def log(self) -> list[list]:
        with self.httpd.lock:
            return [list(e) for e in self.httpd.log]

    def clear_log(self) -> None:
        """Forget the requests logged so far (a test that shares an origin judges only its own)."""
        with self.httpd.lock:
            self.httpd.log.clear()

    @property
    def max_concurrent(self) -> int:
        with self.httpd.lock:
            return self.httpd.max_concurrent

    @property
    def connections(self) -> int:
        with self.httpd.lock:
            return self.httpd.connections

    def hits(self, key: str) -> int:
        with self.httpd.lock:
            return self.httpd.hits.get(key, 0)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.httpd.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@contextlib.contextmanager
def start_origin(tls: tuple[str, str] | None = None, host: str = "127.0.0.1", **options: object) -> Iterator[Origin]:
    """An ``Origin`` (same arguments) for the duration of a ``with``."""
    o = Origin(tls, host, **options)  # type: ignore[arg-type]
    try:
        yield o
    finally:
        o.stop()


def make_cert(directory: str, hostname: str) -> tuple[str, str]:
    """A self-signed certificate for ``hostname`` (openssl CLI); returns (certfile, keyfile)."""
    import subprocess

    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "2", "-subj", f"/CN={hostname}", "-addext", f"subjectAltName=DNS:{hostname}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class OriginProcess:
    """The origin in a child process (``python -m shmfetch.testing.origin``), so that serving never shares
    a GIL with the load generator or the peers it is compared with; stopped by ``close()`` or on leaving a
    ``with``. ``urls``: the page set's URLs (``pages`` of them)."""

    def __init__(
        self,
        pages: int = 200,
        seed: int = 1,
        latency_ms: float = 0.0,
        min_kb: int = pageset.MIN_BYTES // 1000,
        cache_control: str = "",
        pages_dir: Path | None = None,
    ) -> None:
        argv = [sys.executable, "-m", "shmfetch.testing.origin", "--pages", str(pages), "--seed", str(seed)]
        argv += ["--latency-ms", str(latency_ms), "--min-kb", str(min_kb), "--cache-control", cache_control]
        if pages_dir:
            argv += ["--pages-dir", str(pages_dir)]
        # Run from the directory that holds this package, so the child imports this very shmfetch.
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=root)
        line = self.proc.stdout.readline() if self.proc.stdout else ""  # blocks until it listens (or dies)
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError("the origin process did not start")
        self.port = int(line.split()[1])
        self.urls = [self.url(pageset.page_path(i)) for i in range(pages)]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> OriginProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; print ``PORT <n>`` once listening."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=200, help="pages in the /p/I.html set (default 200)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the page set (default 1)")
    ap.add_argument("--min-kb", type=int, default=pageset.MIN_BYTES // 1000, help="smallest page (default 10)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="delay before each response")
    ap.add_argument("--cache-control", default="", help="a Cache-Control header on every page (default none)")
    ap.add_argument("--pages-dir", type=Path, help="a directory of .html files served under /pages/")
    ap.add_argument("--host", default="127.0.0.1", help="loopback only (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    args = ap.parse_args(argv)
    if not args.host.startswith("127.") and args.host != "::1":
        ap.error("the origin binds to loopback only")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    o = Origin(
        host=args.host, port=args.port, pages_dir=args.pages_dir, page_set=(args.pages, args.seed, args.min_kb),
        cache_control=args.cache_control, latency=args.latency_ms / 1000, record=False,
    )  # fmt: skip
    print(f"PORT {o.port}", flush=True)
    while not stop.wait(0.5):
        pass
    o.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
