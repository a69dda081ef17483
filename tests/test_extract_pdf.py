"""PDF documents: exact text, Markdown and fields from real PDFs (shmfetch/testing/pdf_docs.py), first from the pure
extraction function, then through a real daemon, the real HTTP origin and every interface (CLI submit,
HTTP API, Python client); the bounds (page cap, deadline, extraction slots) and the errors."""

from __future__ import annotations

import gzip
import json
import random
import socket
import threading
import time
import urllib.parse

import pytest
import requests

from shmfetch import Client
from shmfetch.extract.pdf import NO_TEXT, extract_pdf, pdf_date
from shmfetch.testing import pdf_docs as docs

from .helpers import (
    origin_fixture,  # noqa: F401
    page_text,
    proc_kib,
    run_cli,
    running_daemon,
    wait_for,
    write_config,
)

BASE = "http://127.0.0.1:8000/dir/doc.pdf"
PDF = {"Content-Type": "application/pdf"}


def extract(data: bytes, mode: str = "text", **kw: object):
    args: dict[str, object] = {
        "links": False, "metadata": False, "final_url": BASE, "max_pages": 500, "max_links": 100,
        "deadline": time.monotonic() + 30,
    }  # fmt: skip
    args.update(kw)
    return extract_pdf(bytearray(data), mode, **args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pdfs() -> dict[str, bytes]:
    report = docs.report_pdf()
    return {
        "report": report,
        "columns": docs.columns_pdf(),
        "intl": docs.intl_pdf(),
        "links": docs.links_pdf(),
        "encrypted": docs.encrypted_pdf(),
        "truncated": report[: len(report) // 2],
        "image": docs.image_only_pdf(),
        "pages600": docs.many_pages_pdf(600),
    }


# -- the extraction function ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["text", "main", "markdown"])
def test_report_text_per_mode_drops_running_lines_only_in_main_content(pdfs, mode):
    got = extract(pdfs["report"], mode)
    assert got.error is None and got.text == docs.report_text(mode)
    assert (docs.REPORT_HEADER in got.text) == (mode == "text")


@pytest.mark.parametrize("mode", ["text", "main"])
def test_page_numbers_go_from_the_main_content_even_on_few_pages_and_bullets_are_items(mode):
    assert extract(docs.notes_pdf(), mode).text == docs.notes_text(mode)


def test_information_dictionary_and_catalog_fields(pdfs):
    got = extract(pdfs["report"], metadata=True)
    assert (got.title, got.description, got.lang) == (docs.REPORT_TITLE, "Figures for the first quarter", "en-GB")
    assert got.published == "2024-03-15" and got.truncated is False and got.message is None
    assert extract(pdfs["report"]).published is None  # only with metadata
    assert extract(pdfs["columns"]).lang is None  # declares none


def test_two_columns_are_read_column_after_column(pdfs):
    assert extract(pdfs["columns"]).text == "\n".join(docs.COLUMNS)
    assert extract(pdfs["columns"], "markdown").text == "\n\n".join(docs.COLUMNS)


def test_accents_and_cjk_and_the_title_from_the_first_heading(pdfs):
    got = extract(pdfs["intl"])
    assert got.text == docs.intl_text()
    assert got.title == docs.INTL_HEADING  # no Title in the information dictionary
    md = extract(pdfs["intl"], "markdown").text
    assert md == "\n\n".join([f"# {docs.INTL_HEADING}", *docs.INTL])


def test_lines_after_characters_outside_the_bmp_are_placed_by_their_own_glyphs():
    assert extract(docs.astral_pdf()).text == "\n".join(docs.ASTRAL)


def test_link_annotations_resolved_against_the_final_url(pdfs):
    got = extract(pdfs["links"], links=True)
    assert got.links == docs.links_expected(BASE) and got.links_truncated is False
    capped = extract(pdfs["links"], links=True, max_links=2)
    assert capped.links == docs.links_expected(BASE)[:2] and capped.links_truncated is True
    assert extract(pdfs["links"]).links is None


def test_page_cap_keeps_the_first_pages_and_says_truncated(pdfs):
    got = extract(pdfs["pages600"])
    assert got.truncated is True and got.text == docs.many_pages_text(500)
    assert got.message == "the first 500 of 600 pages ([pdf] max_pages)"
    whole = extract(pdfs["pages600"], max_pages=600)
    assert whole.truncated is False and whole.text == docs.many_pages_text(600)


def test_image_only_pdf_is_ok_with_empty_text_and_a_message(pdfs):
    got = extract(pdfs["image"])
    assert (got.error, got.text, got.message) == (None, "", NO_TEXT)
    mixed = extract(docs.image_only_pdf(("Before the scan.", "After the scan.")), "markdown")
    assert (mixed.text, mixed.message) == ("Before the scan.\n\n---\n\nAfter the scan.", None)


def test_encrypted_truncated_and_corrupt_files_are_decode_errors(pdfs):
    assert extract(pdfs["encrypted"]).error == ("decode_error", "encrypted PDF")
    assert extract(pdfs["truncated"]).error == ("decode_error", "truncated PDF: no %%EOF at its end")
    bad = extract(b"%PDF-1.7\n" + bytes(range(256)) * 20 + b"\n%%EOF\n").error
    assert bad is not None and bad[0] == "decode_error" and bad[1].startswith("corrupt PDF")


def test_damaged_pdfs_are_ok_or_decode_error_never_an_exception(pdfs):
    rnd = random.Random(5)
    seen = set()
    for _ in range(150):
        data = bytearray(rnd.choice([pdfs["report"], pdfs["links"], pdfs["intl"]]))
        for _ in range(rnd.randint(1, 30)):
            data[rnd.randrange(len(data) - 10)] = rnd.randrange(256)
        got = extract(bytes(data), rnd.choice(["text", "main", "markdown"]), links=True, metadata=True)
        assert got.error is None or got.error[0] == "decode_error", got.error
        seen.add(got.error is None)
    assert seen == {True, False}  # both outcomes happened: the damage reached PDFium's parser


def test_streams_that_inflate_past_the_budget_are_too_large_before_pdfium_reads_them():
    small = extract(docs.flate_bomb_pdf(8), max_inflated=16 << 20)
    assert (small.error, small.text) == (None, "hello")
    bomb = extract(docs.flate_bomb_pdf(64), max_inflated=16 << 20)
    assert bomb.error == ("too_large", "the PDF's streams inflate to more than [pdf] max_inflated_bytes=16777216")


def test_deadline_is_checked_between_pages():
    slow = docs.dense_pdf(20000)
    t0 = time.monotonic()
    got = extract(slow, max_pages=1_000_000, deadline=t0 + 0.5)
    took = time.monotonic() - t0
    assert got.error is not None and got.error[0] == "timeout", got.error
    assert took < 0.5 + 1.0


def test_pdf_dates():
    assert pdf_date("D:20240315093000+01'00'") == "2024-03-15"
    assert pdf_date("D:2024") == "2024-01-01"  # month and day default to 01 (PDF 1.7, 7.9.4)
    assert pdf_date("D:20241399") is None and pdf_date("March 2024") is None and pdf_date(None) is None


def test_pdf_config_keys_are_checked(tmp_path):
    from shmfetch.config import ConfigError, PdfConfig, load

    assert load(write_config(tmp_path)).pdf == PdfConfig(enabled=True, max_pages=500)
    assert load(write_config(tmp_path, pdf={"enabled": "no", "max_pages": 7})).pdf == PdfConfig(False, 7)
    for key, value in (("max_pages", 0), ("enabled", "perhaps")):
        with pytest.raises(ConfigError, match=rf"\[pdf\] {key}"):
            load(write_config(tmp_path, pdf={key: value}))


# -- through a daemon ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connects(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def served(pdfs, origin) -> dict[str, str]:
    """The documents on the origin: as application/pdf, one as octet-stream, one without a type."""
    types = {"columns": "application/octet-stream", "intl": ""}
    urls = {}
    for name, body in pdfs.items():
        path = f"/pdf-tests/{name}.pdf"
        origin.respond(path, 200, body, {"Content-Type": types.get(name, "application/pdf")})
        urls[name] = origin.url(path)
    return urls


def _cases(urls: dict[str, str]) -> list[tuple[str, dict[str, object], dict[str, object]]]:
    """(url, options, the result fields expected) for the interface test."""
    ok = {"ok": True, "error": None, "truncated": False, "content_type": "application/pdf"}
    return [
        (urls["report"], {"mode": "main", "metadata": True}, {
            **ok, "text": docs.report_text("main"), "title": docs.REPORT_TITLE, "lang": "en-GB",
            "published": "2024-03-15", "description": "Figures for the first quarter", "message": None,
        }),
        (urls["report"], {"mode": "markdown"}, {**ok, "text": docs.report_text("markdown"), "published": None}),
        (urls["report"], {}, {**ok, "text": docs.report_text("text")}),
        (urls["columns"], {}, {**ok, "text": "\n".join(docs.COLUMNS), "title": None}),
        (urls["intl"], {}, {**ok, "text": docs.intl_text(), "title": docs.INTL_HEADING}),
        (urls["links"], {"links": True}, {
            **ok, "links": docs.links_expected(urls["links"]), "links_truncated": False,
        }),
        (urls["image"], {}, {**ok, "text": "", "message": NO_TEXT}),
        (urls["pages600"], {}, {**ok, "text": docs.many_pages_text(500), "truncated": True}),
        (urls["encrypted"], {}, {"ok": False, "error": "decode_error", "message": "encrypted PDF", "text": ""}),
        (urls["truncated"], {}, {"ok": False, "error": "decode_error", "text": ""}),
    ]  # fmt: skip


def _cli_args(options: dict[str, object]) -> list[str]:
    out = ["--mode", str(options["mode"])] if "mode" in options else []
    return out + [f"--{k}" for k in ("metadata", "links") if options.get(k)]


def _check(got: dict[str, object], want: dict[str, object], how: str) -> None:
    assert {k: got[k] for k in want} == want, how


def test_a_compressed_pdf_sent_as_octet_stream_is_sniffed_after_decoding(pdfs, origin):
    from shmfetch.config import FetchConfig, PdfConfig, SecurityConfig
    from shmfetch.extract.page import page_fetcher

    path = "/pdf-tests/columns.pdf.gz"
    hdrs = {"Content-Type": "binary/octet-stream", "Content-Encoding": "gzip"}
    origin.respond(path, 200, gzip.compress(pdfs["columns"]), hdrs)
    loopback = SecurityConfig(allow_networks=("127.0.0.1/32",))
    with_pdf = page_fetcher(FetchConfig(timeout=10), loopback, pdf=PdfConfig())
    without = page_fetcher(FetchConfig(timeout=10), loopback)
    try:
        got = with_pdf.fetch(origin.url(path))
        assert (got.ok, got.content_type, got.text) == (True, "application/pdf", "\n".join(docs.COLUMNS))
        got = without.fetch(origin.url(path))
        assert (got.error, got.content_type) == ("unsupported_content_type", "binary/octet-stream")
    finally:
        with_pdf.close()
        without.close()


@pytest.mark.slow
def test_pdfs_through_every_interface(tmp_path, served):
    port = _free_port()
    with running_daemon(tmp_path, http={"listen": f"127.0.0.1:{port}"}) as d, Client(d.socket, timeout=60) as c:
        wait_for(lambda: _connects(port), 20, "the HTTP port")
        for url, options, want in _cases(served):
            _check(c.fetch(url, **options).to_dict(), want, f"Python client: {url} {options}")
            query = {"url": url, **{k: str(v).lower() for k, v in options.items()}}
            r = requests.get(
                f"http://127.0.0.1:{port}/fetch?" + urllib.parse.urlencode(query),
                headers={"Accept": "application/json"},
                timeout=60,
            )
            _check(r.json(), want, f"HTTP API: {url} {options}")
            p = run_cli("submit", "--socket", d.socket, "--json", *_cli_args(options), url, timeout=60)
            assert p.returncode == (0 if want["ok"] else 1), p.stderr
            _check(json.loads(p.stdout), want, f"CLI: {url} {options}")
        # A plain-text HTTP answer has no fields: a truncated document says so in a header.
        r = requests.get(f"http://127.0.0.1:{port}/fetch", params={"url": served["pages600"]}, timeout=60)
        assert r.headers["X-Shmfetch-Truncated"] == "true" and r.text == docs.many_pages_text(500)
        r = requests.get(f"http://127.0.0.1:{port}/fetch", params={"url": served["report"]}, timeout=60)
        assert "X-Shmfetch-Truncated" not in r.headers and r.text == docs.report_text("text")


def test_disabled_pdfs_stay_unsupported(tmp_path, served):
    with running_daemon(tmp_path, pdf={"enabled": "false"}) as d, Client(d.socket, timeout=60) as c:
        for name in ("report", "columns"):
            got = c.fetch(served[name])
            assert (got.ok, got.error, got.text) == (False, "unsupported_content_type", ""), got


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as fh:
        return fh.read()


def test_a_worker_loads_pdfium_on_its_first_pdf(tmp_path, served, origin):
    with running_daemon(tmp_path, daemon={"workers": 1}) as d, Client(d.socket, timeout=60) as c:
        (worker,) = d.worker_pids()
        assert c.fetch(origin.url("/page/1")).text == page_text(1)
        assert "pdfium" not in _maps(worker)
        assert c.fetch(served["columns"]).text == "\n".join(docs.COLUMNS)
        assert "pdfium" in _maps(worker)


def test_a_truncated_result_keeps_truncated_when_answered_from_the_cache(tmp_path, pdfs, origin):
    path = "/pdf-tests/cached-600.pdf"
    origin.respond(path, 200, pdfs["pages600"], {**PDF, "Cache-Control": "max-age=600"})
    with running_daemon(tmp_path, cache={"path": tmp_path / "cache.db"}) as d, Client(d.socket, timeout=60) as c:
        first = c.fetch(origin.url(path))
        assert (first.ok, first.cached, first.truncated) == (True, False, True)
        again = c.fetch(origin.url(path))
        assert (again.cached, again.truncated, again.text) == (True, True, first.text)


@pytest.mark.slow
def test_a_pdf_that_takes_the_whole_deadline_answers_timeout_and_the_worker_serves_on(tmp_path, origin):
    """A real document that is slow to read (20 000 pages over one dense content stream), not a hook."""
    path = "/pdf-tests/dense.pdf"
    origin.respond(path, 200, docs.dense_pdf(20000), PDF)
    with (
        running_daemon(tmp_path, daemon={"workers": 1}, fetch={"timeout": 2}, pdf={"max_pages": 1_000_000}) as d,
        Client(d.socket, timeout=60) as c,
    ):
        (worker,) = d.worker_pids()
        t0 = time.monotonic()
        got = c.fetch(origin.url(path))
        took = time.monotonic() - t0
        assert got.error == "timeout" and "page" in got.message, got
        assert took < 2 + 1.0, took
        assert c.fetch(origin.url("/page/2")).text == page_text(2)
        assert c.fetch(origin.url("/pdf-tests/dense.pdf"), timeout=0.5).error == "timeout"
        assert d.worker_pids() == [worker]  # the same worker: nothing was killed or respawned


@pytest.mark.slow
def test_a_flate_bomb_costs_the_worker_no_more_than_the_budget(tmp_path, origin):
    """A 1 MB PDF whose content stream inflates to 1 GiB: PDFium alone took 1.5 GiB of RSS for it."""
    path = "/pdf-tests/flate-bomb.pdf"
    origin.respond(path, 200, docs.flate_bomb_pdf(1024), PDF)
    with running_daemon(tmp_path, daemon={"workers": 1}) as d, Client(d.socket, timeout=60) as c:
        (worker,) = d.worker_pids()
        got = c.fetch(origin.url(path))
        assert (got.error, got.text) == ("too_large", ""), got
        assert "max_inflated_bytes=268435456" in got.message
        assert proc_kib(worker, "VmHWM") < 200 * 1024  # the default budget is 256 MiB: it never got there
        assert c.fetch(origin.url("/page/3")).text == page_text(3)


@pytest.mark.slow
def test_pdfs_waiting_for_pdfium_hold_no_extraction_slot(tmp_path, origin):
    """Two slow PDFs at once: one reads, the other waits for PDFium without an extraction slot, so HTML
    pages still get one and answer long before the PDFs time out."""
    path = "/pdf-tests/dense-slots.pdf"
    origin.respond(path, 200, docs.dense_pdf(20000), PDF)
    done: dict[str, float] = {}
    with (
        running_daemon(tmp_path, daemon={"workers": 1}, fetch={"timeout": 8}, pdf={"max_pages": 1_000_000}) as d,
    ):

        def slow(i: int) -> None:
            with Client(d.socket, timeout=60) as c:
                assert c.fetch(origin.url(path), timeout=6).error == "timeout"
                done[f"pdf{i}"] = time.monotonic()

        t0 = time.monotonic()
        threads = [threading.Thread(target=slow, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # both PDFs read and in extraction (or waiting for PDFium)
        with Client(d.socket, timeout=60) as c:
            for i in range(4):
                assert c.fetch(origin.url(f"/page/{i}")).text == page_text(i)
        html_done = time.monotonic() - t0
        for t in threads:
            t.join(30)
        assert len(done) == 2
        assert html_done < 4.0 and all(v - t0 >= 6 for v in done.values()), (html_done, done)
