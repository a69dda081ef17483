"""PDF text extraction: pypdfium2 (as shmfetch runs it) against pypdf and pdfminer.six, in one run.

    .venv/bin/python tools/bench_pdf.py [--pages 100] [--rounds 3] [--no-daemon]

(needs the ``bench`` extra: ``pip install -e '.[test,bench]'``). Every library reads the same generated
documents with known text (shmfetch/testing/pdf_docs.py): a ``--pages`` book (varied paragraphs, running header,
page numbers), the three-page report, the two-column page and the accents/CJK page. Printed:

* speed: pages/s (wall) and CPU ms per page over all documents, best of ``--rounds``, and each as a ratio
  to shmfetch's, measured in the same run;
* quality: text F1 against the known full text, over whitespace tokens (shmfetch.extract.evaluate), per
  document (the CJK page has few spaces: its F1 is all-or-nothing per run of text);
* memory: each library's peak RSS reading the book in a fresh process (VmHWM, and its growth over the
  process after the import), and the peak RSS of a real daemon's worker that fetched the book from a
  local origin (shmfetch only; ``--no-daemon`` skips it).

Contenders:
  shmfetch      shmfetch.extract.pdf.extract_pdf: PDFium's text plus the paragraph layout (text mode)
  pypdfium2     PDFium's text alone: PdfTextPage.get_text_range() per page
  pypdf         PdfReader(...).pages[i].extract_text()
  pdfminer.six  pdfminer.high_level.extract_text()
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shmfetch.extract.evaluate import token_scores  # noqa: E402
from shmfetch.testing import pdf_docs as docs  # noqa: E402


def shmfetch_text(data: bytes) -> str:
    from shmfetch.extract.pdf import LOCK, extract_pdf

    with LOCK:
        got = extract_pdf(
            bytearray(data), "text", links=False, metadata=False, final_url="http://127.0.0.1/doc.pdf",
            max_pages=1_000_000, max_links=1, deadline=time.monotonic() + 3600,
        )  # fmt: skip
    assert got.error is None, got.error
    return got.text


def pypdfium2_text(data: bytes) -> str:
    import pypdfium2

    doc = pypdfium2.PdfDocument(data)
    try:
        out = []
        for i in range(len(doc)):
            page = doc[i]
            tp = page.get_textpage()
            out.append(tp.get_text_range())
            tp.close()
            page.close()
        return "\n\n".join(out)
    finally:
        doc.close()


def pypdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    return "\n\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)


def pdfminer_text(data: bytes) -> str:
    from pdfminer.high_level import extract_text

    return extract_text(io.BytesIO(data))


LIBRARIES: dict[str, Callable[[bytes], str]] = {
    "shmfetch": shmfetch_text,
    "pypdfium2": pypdfium2_text,
    "pypdf": pypdf_text,
    "pdfminer.six": pdfminer_text,
}


def documents(pages: int) -> list[tuple[str, bytes, int, str]]:
    """(name, bytes, page count, known full text) of every document."""
    return [
        (f"book-{pages}", docs.book_pdf(pages), pages, docs.book_text(pages)),
        ("report", docs.report_pdf(), docs.REPORT_PAGES, docs.report_text("text")),
        ("columns", docs.columns_pdf(), 1, "\n".join(docs.COLUMNS)),
        ("intl", docs.intl_pdf(), 1, docs.intl_text()),
    ]


def measure(fn: Callable[[bytes], str], docset: list, rounds: int) -> tuple[float, float, dict[str, float]]:
    """(pages/s by wall clock, CPU ms per page, F1 per document) over ``docset``, best of ``rounds``."""
    pages = sum(d[2] for d in docset)
    fn(docset[-1][1])  # imports and first-use set-up are not timed
    best_wall = best_cpu = float("inf")
    f1: dict[str, float] = {}
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        texts = [fn(data) for _, data, _, _ in docset]
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
        f1 = {name: token_scores(text, known)[2] for (name, _, _, known), text in zip(docset, texts, strict=True)}
    return pages / best_wall, best_cpu * 1000 / pages, f1


def rss_child(lib: str, path: str) -> None:
    """In a fresh process: import ``lib``'s code, read the document once, print the KiB figures."""
    fn = LIBRARIES[lib]
    fn(docs.columns_pdf())  # loads the library (and its first-use state) before the baseline
    base = _status_kib("VmRSS")
    fn(Path(path).read_bytes())
    print(json.dumps({"base": base, "peak": _status_kib("VmHWM")}))


def _status_kib(field: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def library_rss(book: bytes) -> dict[str, tuple[int, int]]:
    """{library: (peak KiB, growth KiB)} reading the book, each in a fresh interpreter."""
    out = {}
    with tempfile.NamedTemporaryFile(suffix=".pdf") as fh:
        fh.write(book)
        fh.flush()
        for lib in LIBRARIES:
            p = subprocess.run(
                [sys.executable, __file__, "--rss-child", lib, fh.name],
                capture_output=True, text=True, timeout=600, check=True,
            )  # fmt: skip
            got = json.loads(p.stdout)
            out[lib] = (got["peak"], got["peak"] - got["base"])
    return out


def worker_rss(book: bytes) -> tuple[int, int]:
    """(worker VmHWM KiB after an HTML page, after the book too): one real daemon worker, a local origin."""
    from shmfetch import Client
    from shmfetch.testing.daemon import running_daemon
    from shmfetch.testing.origin import start_origin

    with tempfile.TemporaryDirectory() as tmp, start_origin() as origin:
        origin.respond("/book.pdf", 200, book, {"Content-Type": "application/pdf"})
        with running_daemon(Path(tmp), daemon={"workers": 1}, fetch={"timeout": 60}) as d:
            (worker,) = d.worker_pids()
            with Client(d.socket, timeout=120) as c:
                assert c.fetch(origin.url("/page/1")).ok
                before = _status_kib("VmHWM", worker)
                got = c.fetch(origin.url("/book.pdf"))
                assert got.ok, got
                return before, _status_kib("VmHWM", worker)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=100, help="pages of the book (default 100)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-daemon", action="store_true", help="skip the daemon worker's RSS")
    ap.add_argument("--rss-child", nargs=2, metavar=("LIB", "PDF"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return 0
    docset = documents(args.pages)
    results = {lib: measure(fn, docset, args.rounds) for lib, fn in LIBRARIES.items()}
    rss = library_rss(docset[0][1])
    ref_speed, ref_cpu = results["shmfetch"][0], results["shmfetch"][1]
    names = [d[0] for d in docset]
    print(f"{sum(d[2] for d in docset)} pages in {len(docset)} documents, best of {args.rounds}")
    print(f"{'library':<13} {'pages/s':>8} {'x':>6} {'CPU ms/page':>11} {'x':>6} "
          + " ".join(f"{'F1 ' + n:>13}" for n in names) + f" {'peak MiB':>9} {'+MiB':>6}")  # fmt: skip
    for lib, (speed, cpu, f1) in results.items():
        peak, grew = rss[lib]
        print(
            f"{lib:<13} {speed:8.1f} {speed / ref_speed:6.2f} {cpu:11.2f} {cpu / ref_cpu:6.2f} "
            + " ".join(f"{f1[n]:13.3f}" for n in names)
            + f" {peak / 1024:9.1f} {grew / 1024:6.1f}"
        )
    if not args.no_daemon:
        before, after = worker_rss(docset[0][1])
        print(f"daemon worker VmHWM: {before / 1024:.1f} MiB after an HTML page, "
              f"{after / 1024:.1f} MiB after the {args.pages}-page PDF")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
