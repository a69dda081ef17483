"""PDF documents with known text, generated with fpdf2 (and one written by hand), for the PDF tests and
tools/bench_pdf.py.

Each builder returns the document's bytes; the module's constants are the text shmfetch must extract.
The CJK text is set in Noto Sans CJK, shipped by the PyPI package ``cvttf-notosanscjk-regular`` (the
``test`` extra); fpdf2 embeds the subset it uses, with the ToUnicode map PDFium reads text back through.
"""

from __future__ import annotations

import datetime
import io
import os

from fpdf import FPDF

CREATED = datetime.datetime(2024, 3, 15, 9, 30, tzinfo=datetime.UTC)

# -- a report: several pages with a running header, a numbered footer, a heading and paragraphs -----------

REPORT_TITLE = "Quarterly Report 2024"
REPORT_HEADER = "Northwind Trading Quarterly Report"
REPORT_HEADING = "Results of the quarter"
REPORT_PAGES = 3


_TOPICS = ("revenue", "freight", "staff", "storage", "software", "pensions", "insurance", "taxes")
_PLACES = ("Lisbon", "Oslo", "Riga", "Turin", "Ghent", "Cork", "Brno", "Split")


def report_paragraphs(page: int) -> list[str]:
    """The body paragraphs of the report's page ``page`` (1-based): long enough to wrap, and worded
    differently on every page (a body line repeated on every page would be a running line)."""
    return [
        f"In {_PLACES[(page * 2 + k) % 8]} the {_TOPICS[(page + k) % 8]} figures of section {page}.{k} rose "
        f"while the {_TOPICS[(page + k + 3) % 8]} costs stayed flat, so the board of {_PLACES[(page + k) % 8]} "
        f"approved the {_TOPICS[(page * 3 + k) % 8]} plan without a vote."
        for k in (1, 2)
    ]


def report_pdf(pages: int = REPORT_PAGES) -> bytes:
    pdf = _Report()
    pdf.set_title(REPORT_TITLE)
    pdf.set_subject("Figures for the first quarter")
    pdf.set_lang("en-GB")
    pdf.set_creation_date(CREATED)
    for page in range(1, pages + 1):
        pdf.add_page()
        if page == 1:
            pdf.set_font("helvetica", "B", 18)
            pdf.multi_cell(0, 10, REPORT_HEADING, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(4)
        pdf.set_font("helvetica", size=11)
        for para in report_paragraphs(page):
            pdf.multi_cell(0, 6, para, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(5)
    return bytes(pdf.output())


class _Report(FPDF):
    def header(self) -> None:
        self.set_font("helvetica", size=9)
        self.cell(0, 8, REPORT_HEADER, align="C", new_x="LMARGIN", new_y="NEXT")
        self.ln(6)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("helvetica", size=9)
        self.cell(0, 8, f"Page {self.page_no()} of {{nb}}", align="C")


def report_text(mode: str, pages: int = REPORT_PAGES) -> str:
    """The report's text in ``mode``: full text keeps the running header and footer; the main content
    and Markdown drop them."""
    blocks = []
    for page in range(1, pages + 1):
        paras = report_paragraphs(page)
        if mode == "markdown":
            head = [f"# {REPORT_HEADING}"] if page == 1 else []
            blocks.append("\n\n".join(head + paras))
            continue
        head = [REPORT_HEADING] if page == 1 else []
        if mode == "text":
            blocks.append("\n".join([REPORT_HEADER, *head, *paras, f"Page {page} of {pages}"]))
        else:
            blocks.append("\n".join(head + paras))
    return ("\n\n---\n\n" if mode == "markdown" else "\n\n").join(blocks)


# -- two columns -----------------------------------------------------------------------------------------

COLUMNS = [
    "The left column opens the article with a paragraph that runs over several lines of the narrow column.",
    "A second paragraph in the left column is shorter but still wraps onto another line.",
    "The right column continues the story with text that is read after the whole left column is done.",
]


def columns_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_creation_date(CREATED)
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    with pdf.text_columns(ncols=2, gutter=10) as cols:
        cols.write(COLUMNS[0])
        cols.ln()
        cols.ln()
        cols.write(COLUMNS[1])
        cols.new_column()
        cols.write(COLUMNS[2])
    return bytes(pdf.output())


# -- accents and CJK, with no Title: the title is the heading --------------------------------------------

INTL_HEADING = "Grüße aus Köln und 東京"
INTL = [
    "Café, naïve façade, Ærø, Øresund and Ångström: accents of several languages in one long paragraph.",
    "東京は日本の首都であり、世界でも有数の大都市です。多くの人々が毎日電車で通勤しています。"
    "春には桜が咲き、公園は花見を楽しむ人々でにぎわいます。日本の食文化も世界中で人気があります。",
    "서울은 대한민국의 수도입니다. 北京是中华人民共和国的首都。",
]


def cjk_font() -> str:
    import cvttf_NotoSansCJK_Regular

    return os.path.join(os.path.dirname(cvttf_NotoSansCJK_Regular.__file__), "NotoSansCJKtc-Regular.otf")


def intl_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_creation_date(CREATED)
    pdf.add_font("noto", fname=cjk_font())
    pdf.add_page()
    pdf.set_font("noto", size=20)
    pdf.multi_cell(0, 12, INTL_HEADING, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("noto", size=12)
    for para in INTL:
        pdf.multi_cell(0, 7, para, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(5)
    return bytes(pdf.output())


def intl_text() -> str:
    return "\n".join([INTL_HEADING, *INTL])


# -- link annotations ------------------------------------------------------------------------------------

LINKS = [  # (visible text, link target): an absolute URL, relative ones, a repeat, mailto, a fragment
    ("Absolute link", "https://example.org/a?x=1#part"),
    ("Relative link", "/docs/b.html"),
    ("Sibling link", "c.pdf"),
    ("Repeated link", "https://example.org/a?x=1"),
    ("Mail link", "mailto:someone@example.org"),
]


def links_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_creation_date(CREATED)
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    for text, target in LINKS:
        pdf.cell(text=text, link=target, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(8)
    inner = pdf.add_link(page=1)
    pdf.cell(text="Internal link", link=inner, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def links_expected(final_url: str) -> list[dict[str, object]]:
    """The links of ``links_pdf`` served at ``final_url`` (an http://127.0.0.1:PORT/dir/doc.pdf URL)."""
    base = final_url.rsplit("/", 1)[0]
    host = final_url.split("/", 3)[:3]
    return [
        {"url": "https://example.org/a?x=1", "internal": False},
        {"url": "/".join(host) + "/docs/b.html", "internal": True},
        {"url": base + "/c.pdf", "internal": True},
    ]


# -- encrypted, image-only, many pages -----------------------------------------------------------------


def encrypted_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner-secret", user_password="user-secret")
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Only with the password.")
    return bytes(pdf.output())


def image_only_pdf(text_around: tuple[str, ...] = ()) -> bytes:
    """A page holding a picture and no text, as a scanner makes it; with ``text_around``, a page of text
    before it and one after (one line each)."""
    from PIL import Image

    img = Image.new("RGB", (200, 100), (30, 90, 160))
    png = io.BytesIO()
    img.save(png, format="PNG")
    pdf = FPDF()
    pdf.set_creation_date(CREATED)
    pdf.set_font("helvetica", size=12)
    if text_around:
        pdf.add_page()
        pdf.cell(text=text_around[0])
    pdf.add_page()
    pdf.image(io.BytesIO(png.getvalue()), x=20, y=20, w=150)
    if text_around:
        pdf.add_page()
        pdf.cell(text=text_around[1])
    return bytes(pdf.output())


def numbered_line(page: int) -> str:
    return f"This is the only line of page number {page}."


def many_pages_pdf(pages: int) -> bytes:
    """``pages`` pages, page N holding ``numbered_line(N)``."""
    pdf = FPDF()
    pdf.set_creation_date(CREATED)
    pdf.set_font("helvetica", size=12)
    for page in range(1, pages + 1):
        pdf.add_page()
        pdf.cell(text=numbered_line(page))
    return bytes(pdf.output())


def many_pages_text(pages: int) -> str:
    return "\n\n".join(numbered_line(p) for p in range(1, pages + 1))


def dense_pdf(pages: int, lines: int = 60, words: int = 14) -> bytes:
    """A hand-written PDF of ``pages`` pages that all draw one shared content stream of ``lines`` lines of
    text: small on the wire, but each page costs a parser the whole stream (a document that takes its
    reader's time, page after page)."""
    text = " ".join(f"word{k}" for k in range(words))
    ops = ["BT /F1 10 Tf 12 TL 40 800 Td"] + [f"({text}) '" for _ in range(lines)] + ["ET"]
    stream = "\n".join(ops).encode()
    n_fixed = 4  # catalog, pages, font, content
    kids = " ".join(f"{n_fixed + 1 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>"
    objects += [page] * pages
    return _assemble(objects)


def _assemble(objects: list[bytes]) -> bytes:
    """A PDF file of ``objects`` (numbered from 1, the first one the catalog) with a valid xref table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# -- a book: many pages of varied paragraphs, with a running header and page numbers (the benchmark's) ------

_WORDS = (
    "harbour ledger copper mill river signal lantern orchard quarry winter market engine valley cargo "
    "station bridge census archive meadow furnace canal beacon timber granary foundry workshop railway "
    "parish tariff export vintage mineral cotton spindle weaver plough steam boiler chimney"
).split()


def book_paragraphs(page: int, per_page: int = 4) -> list[str]:
    """Page ``page``'s paragraphs: deterministic word salad, different on every page."""
    import random

    rnd = random.Random(page)
    return [
        " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(40, 70))).capitalize() + "."
        for _ in range(per_page)
    ]


def book_pdf(pages: int) -> bytes:
    pdf = _Book()
    pdf.set_title(f"A book of {pages} pages")
    pdf.set_creation_date(CREATED)
    for page in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("helvetica", size=11)
        for para in book_paragraphs(page):
            pdf.multi_cell(0, 5.5, para, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(4)
    return bytes(pdf.output())


class _Book(FPDF):
    def header(self) -> None:
        self.set_font("helvetica", "I", 9)
        self.cell(0, 8, "The Chronicle of Industry", align="R", new_x="LMARGIN", new_y="NEXT")
        self.ln(4)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("helvetica", size=9)
        self.cell(0, 8, str(self.page_no()), align="C")


def book_text(pages: int) -> str:
    """The book's full text (``text`` mode): header, paragraphs and page number of every page."""
    return "\n\n".join(
        "\n".join(["The Chronicle of Industry", *book_paragraphs(p), str(p)]) for p in range(1, pages + 1)
    )


# -- characters outside the BMP (two UTF-16 units each in PDFium's text) ------------------------------------

ASTRAL = [
    "𠮷野家 𠮷𠮷𠮷𠮷𠮷𠮷𠮷𠮷𠮷𠮷𠮷𠮷 are characters outside the Basic Multilingual Plane.",
    "The paragraph after them runs over several lines, so that each of its lines must be placed by the "
    "glyph PDFium has at that index and not by one a dozen characters earlier on the line above it. A "
    "third line and a fourth line make sure that a line placed on the line above would end the paragraph.",
]


def astral_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_creation_date(CREATED)
    pdf.add_font("noto", fname=cjk_font())
    pdf.add_page()
    pdf.set_font("noto", size=12)
    for para in ASTRAL:
        pdf.multi_cell(0, 7, para, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(5)
    return bytes(pdf.output())


# -- page numbers on a few pages only, and a bulleted list ----------------------------------------------

NOTES = [
    "Notes on the harbour survey, written up after the second visit to the northern quays.",
    "The western pier needs new timber before the winter storms arrive at the end of the year.",
    "The customs house roof leaks over the archive room, where the oldest ledgers are kept.",
    "Nothing else was found that could not wait for the spring inspection of the whole port.",
]
BULLETS = ["• replace the pier timber", "• repair the customs roof", "• move the ledgers upstairs"]


def notes_pdf() -> bytes:
    """Four pages; a bare page number at the foot of page 1 and "- 3 -" at the head of page 3 only (too few
    pages for a running line, but page numbers all the same); a bulleted list on page 4."""
    pdf = FPDF()
    pdf.set_creation_date(CREATED)
    pdf.add_font("noto", fname=cjk_font())
    for page, para in enumerate(NOTES, 1):
        pdf.add_page()
        pdf.set_font("noto", size=11)
        if page == 3:
            pdf.cell(0, 8, "- 3 -", align="C", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(6)
        pdf.multi_cell(0, 6, para, new_x="LMARGIN", new_y="NEXT")
        if page == 4:
            pdf.ln(4)
            for item in BULLETS:
                pdf.multi_cell(0, 6, item, new_x="LMARGIN", new_y="NEXT")
        if page == 1:
            pdf.text(x=104, y=285, text="1")  # text(): no automatic page break at the foot
    return bytes(pdf.output())


def notes_text(mode: str) -> str:
    pages = [[p] for p in NOTES]
    pages[3] += BULLETS
    if mode == "text":
        pages[0].append("1")
        pages[2].insert(0, "- 3 -")
    return "\n\n".join("\n".join(p) for p in pages)


def flate_bomb_pdf(mb: int) -> bytes:
    """One page whose content stream (FlateDecode) inflates to ``mb`` MiB of spaces after a "hello": a
    small file that a reader inflating streams whole pays for in full."""
    import zlib

    deflate = zlib.compressobj(9)
    spaces = b" " * (1 << 20)
    parts = [deflate.compress(b"BT /F1 10 Tf 40 800 Td (hello) Tj ET\n")]
    parts += [deflate.compress(spaces) for _ in range(mb)]
    stream = b"".join(parts) + deflate.flush()
    return _assemble([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
        b"/Contents 4 0 R >>",
    ])  # fmt: skip
