"""Write the content-mode evaluation pages: tests/pages/*.html and tests/pages/expected.jsonl.

Six news-like article pages (about 66 KB each), each with its own article text and its own layout of
boilerplate: a bulk of inline CSS, script and JSON-LD in the head, a mega-menu, a cookie banner, a sidebar
of "most read" headlines, related-link lists, reader comments, a newsletter box, a footer of site links;
two articles are split over several sibling <div>s with an advert and a "read more" box between them.
A seventh, small page has a tech-news layout with a sidebar of links around <p>s (``guide_sidebar_page``).
The expected text of a page is its article body (what schema.org calls ``articleBody`` and
article-extraction benchmarks score): body paragraphs and subheadings, one per line. The headline and
standfirst sit in the article's <header>; the headline is the page's ``title`` metadata.

    python tools/make_eval_pages.py            # rewrites tests/pages (the files are committed)
    python -m shmfetch.evaluate tests/pages tests/pages/expected.jsonl --mode main
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "pages"

SECTIONS = ["World", "Politics", "Business", "Technology", "Science", "Health", "Sport", "Culture",
            "Opinion", "Travel", "Weather", "Podcasts", "Video", "Newsletters", "Puzzles"]  # fmt: skip

ARTICLES = [
    {
        "name": "harbour-bridge",
        "headline": "Harbour bridge reopens after two years of repairs",
        "standfirst": "Engineers replaced every cable of the 1930s span while keeping one lane open to cyclists.",
        "body": [
            "The Riverside harbour bridge reopened to traffic on Monday morning, ending a repair programme that "
            "closed the crossing to cars for almost two years and cost the city council 84 million euros.",
            "Engineers replaced all 212 suspension cables, one at a time, after inspections in 2023 found "
            "corrosion inside the steel strands that could not be seen from the outside. The work was done at "
            "night, when wind speeds over the estuary are usually lower.",
            "## Traffic returns",
            "By eight o'clock a queue of delivery vans stretched back to the ring road. Commuters who had spent "
            "two years on the ferry or on a detour through the industrial estate said the reopening would save "
            "them up to forty minutes a day.",
            "The council's transport director, Helen Marsh, said the bridge would carry a weight limit of 18 "
            "tonnes until the final load tests in the spring. Heavier lorries must still use the tunnel.",
            "Cyclists, who kept a single lane throughout the works, will now get a segregated path on the "
            "eastern side. Campaigners welcomed the change but said the approach roads remained dangerous.",
        ],
        "layout": "nav_footer",
    },
    {
        "name": "vaccine-trial",
        "headline": "Nasal vaccine trial shows strong protection in older adults",
        "standfirst": "A spray given twice, four weeks apart, cut infections by two thirds in a study of 9,000 people.",
        "body": [
            "A vaccine sprayed into the nose protected adults over 65 against respiratory infection about as "
            "well as the injected vaccines now in use, according to results of a large trial published on "
            "Wednesday.",
            "The study followed 9,142 volunteers in four countries for one winter. Those who received two doses "
            "of the spray had 67 percent fewer confirmed infections than those given a placebo, and the "
            "protection held for at least five months.",
            "Researchers say a nasal vaccine could stop the virus where it first enters the body, which "
            "injections do less well. That could reduce transmission as well as illness, although the trial "
            "was not designed to measure it.",
            "## Side effects were mild",
            "The most common side effects were a runny nose and a mild headache, reported by about one in five "
            "participants. No serious reactions were linked to the vaccine.",
            "Regulators in Europe are expected to review the data next year. The manufacturer said it could "
            "produce 50 million doses a year at its plant near Lyon once approval is granted.",
        ],
        "layout": "comments",
    },
    {
        "name": "chess-final",
        "headline": "Teenager wins national chess title with a final-round sacrifice",
        "standfirst": "",
        "body": [
            "Sixteen-year-old Mira Okafor became the youngest national chess champion in four decades on "
            "Sunday, beating the defending champion with a queen sacrifice that commentators called the move "
            "of the tournament.",
            "Okafor needed only a draw in the final round but chose a sharp line of the Sicilian Defence. On "
            "move 27 she gave up her queen for a rook and a knight, leaving her opponent's king exposed on the "
            "long diagonal.",
            "Eleven moves later the defending champion resigned. The hall, which had been silent for most of "
            "the afternoon, broke into applause.",
            "Okafor learned the game from her grandfather at the age of six and trains four hours a day around "
            "her school work. She will represent the country at the world junior championship in August.",
            "Asked about the sacrifice, she said she had calculated the main line the night before and only had "
            "to remember it. Her coach said he had advised her to play safe.",
        ],
        "layout": "related",
    },
    {
        "name": "rail-strike",
        "headline": "Rail workers vote to strike over new rota system",
        "standfirst": "The union says the rotas leave drivers with too little rest between shifts.",
        "body": [
            "Train drivers and conductors voted by a large majority to walk out over a new rota system, their "
            "union announced on Thursday, raising the prospect of the first national rail strike in six years.",
            "Of the members who took part in the ballot, 81 percent backed strike action. Turnout was 72 "
            "percent, comfortably above the legal threshold of 50 percent.",
            "## What the dispute is about",
            "The rail operator introduced computer-generated rotas in January. The union says the system "
            "schedules early shifts straight after late ones and leaves some drivers with fewer than eleven "
            "hours between turns.",
            "The operator says the rotas meet every legal requirement and have reduced cancellations caused by "
            "staff shortages by a quarter. It has offered to review individual cases.",
            "## Dates not yet set",
            "No strike dates have been announced. The union must give two weeks' notice, and its executive will "
            "meet next Tuesday. Talks at the conciliation service are due to resume on Monday.",
            "Passenger groups urged both sides to reach an agreement before the summer holidays, when the "
            "network carries its highest numbers of travellers.",
        ],
        "layout": "split_divs",
    },
    {
        "name": "coral-reef",
        "headline": "Scientists map a deep coral reef hidden beneath a shipping lane",
        "standfirst": "The reef stretches for eleven kilometres at depths where sunlight barely reaches.",
        "body": [
            "Marine biologists have mapped a coral reef about eleven kilometres long lying between 60 and 90 "
            "metres below one of the busiest shipping lanes in the region, the research institute announced.",
            "The reef was first detected by sonar during a survey for an undersea cable. Remotely operated "
            "vehicles then filmed plate-shaped corals, sponges and shoals of fish that had not been recorded "
            "in these waters before.",
            "Deep reefs like this one receive less than five percent of the sunlight at the surface. They are "
            "thought to be less exposed to marine heatwaves, which have bleached many shallow reefs in recent "
            "years.",
            "The researchers have asked the maritime authority to restrict anchoring above the reef. Ships "
            "waiting to enter the port currently drop anchor in the area, and the footage shows scars left by "
            "anchor chains.",
            "A full description of the reef and the species found there will be published later this year.",
        ],
        "layout": "sidebar_cookie",
    },
    {
        "name": "budget-vote",
        "headline": "City council passes budget after all-night session",
        "standfirst": "Libraries keep their opening hours; bus fares rise by ten cents.",
        "body": [
            "The city council approved next year's budget at six o'clock on Friday morning, after a session "
            "that began at two the previous afternoon and included more than 140 amendments.",
            "The final budget of 1.9 billion euros keeps every public library open six days a week, reversing "
            "a proposal to close three branches on Saturdays. The money comes from a reserve that had been set "
            "aside for the new stadium.",
            "Bus fares will rise by ten cents from March. Children under twelve will continue to travel free, "
            "and the monthly pass will cost the same as this year.",
            "## Opposition walks out",
            "Members of the opposition left the chamber shortly before the vote, saying they had not been given "
            "time to read the final amendments. The mayor said every change had been published online by "
            "midnight.",
            "The budget now goes to the regional authority, which must approve the borrowing limits by the end "
            "of January.",
        ],
        "layout": "everything",
    },
]

COMMENTS = [
    ("river_rat", "About time. I've been taking the ferry since 2023."),
    ("J. Patel", "Does anyone know whether the weight limit applies to buses?"),
    ("morning_commuter", "Great news, but the approach roads are still a mess."),
    ("Anna K", "Sharing this with my parents, they were waiting for exactly this."),
    ("skeptic42", "Let's see the full data before celebrating."),
]
RELATED = [
    "Ten things to do in the city this weekend",
    "Council announces new cycle lanes for the old town",
    "Opinion: why our trains are always late",
    "Quiz: how well do you know your neighbourhood?",
    "Weather warning issued for the coast",
    "The best bakeries, chosen by our readers",
]
MOST_READ = [
    "Police appeal for witnesses after break-in at museum",
    "House prices fall for the third month in a row",
    "Football club confirms new manager",
    "Recipe: a winter stew that takes ten minutes to prepare",
    "Airport expansion plans delayed again",
]


def _bulk(seed: int) -> str:
    """What real article pages carry in bulk (most of a 100-200 KB news page): inline CSS, an inline
    script bundle, JSON-LD and an analytics snippet; deterministic, about 60 KB."""
    css = "".join(
        f".c{seed}-{i}{{margin:{i % 7}px {i % 5}px;padding:{i % 3}px;color:#{(i * 7919) % 0xFFFFFF:06x};"
        f"font:{12 + i % 6}px/1.{i % 9} sans-serif}}\n"
        for i in range(300)
    )
    js = "".join(
        f"function m{seed}_{i}(a,b){{var x=a*{i}+b;if(x<{i * 3}&&a>b){{return '<div>'+x+'</div>';}}"
        f"return window.__state&&window.__state['k{i}']||null;}}\n"
        for i in range(250)
    )
    ld = json.dumps(
        {
            "@context": "https://schema.org",
            "@type": "NewsArticle",
            "publisher": {"@type": "Organization", "name": "The Daily Meridian"},
            "keywords": [f"topic-{i}" for i in range(40)],
        }
    )
    return (
        f"<style>{css}</style><script>{js}</script>"
        f'<script type="application/ld+json">{ld}</script>'
        "<script>(function(w,d){var s=d.createElement('script');s.async=1;s.src='/a.js';"
        "d.head.appendChild(s);})(window,document);</script>"
    )


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def _nav() -> str:
    # A mega-menu: each section with its sub-sections, as most news sites have.
    items = "".join(
        f'<li><a href="/{s.lower()}/">{s}</a><ul class="sub">'
        + "".join(
            f'<li><a href="/{s.lower()}/{k}/">{s} {k}</a></li>'
            for k in ("latest", "analysis", "features", "local", "world", "archive")
        )
        + "</ul></li>"
        for s in SECTIONS
    )
    return (
        '<header class="site-header"><a class="logo" href="/">The Daily Meridian</a>'
        f'<nav class="main-nav"><ul>{items}</ul></nav>'
        '<form class="search" action="/search"><input name="q" placeholder="Search"><button>Search</button>'
        '</form><a href="/login">Sign in</a> <a href="/subscribe">Subscribe</a></header>'
    )


def _footer() -> str:
    cols = "".join(
        f'<li><a href="/{w.lower().replace(" ", "-")}">{w}</a></li>'
        for w in (
            "About us",
            "Contact",
            "Careers",
            "Advertise",
            "Privacy policy",
            "Cookie settings",
            "Terms of use",
            "Accessibility",
            "Corrections",
            "Sitemap",
        )  # fmt: skip
    )
    return (
        f'<footer class="site-footer"><ul>{cols}</ul>'
        "<p>© 2026 The Daily Meridian Ltd. All rights reserved. Registered in the city register under "
        "number 0471182. Our journalism is funded by readers and advertisers.</p></footer>"
    )


def _cookie() -> str:
    return (
        '<div id="cookie-banner" class="consent"><p>We use cookies to improve your experience, to show you '
        "personalised advertising and to measure how our site is used. You can change your preferences at "
        'any time.</p><button>Accept all</button><button>Reject all</button><a href="/cookies">Manage '
        "cookies</a></div>"
    )


def _related() -> str:
    items = "".join(f'<li><a href="/story/{i}">{_esc(t)}</a></li>' for i, t in enumerate(RELATED))
    return f'<aside class="related"><h2>Related stories</h2><ul>{items}</ul></aside>'


def _most_read() -> str:
    items = "".join(f'<li><a href="/read/{i}">{_esc(t)}</a></li>' for i, t in enumerate(MOST_READ))
    return f'<aside class="sidebar"><h3>Most read</h3><ol>{items}</ol></aside>'


def _comments() -> str:
    items = "".join(
        f'<li class="comment"><span class="author">{_esc(a)}</span><p>{_esc(t)}</p>'
        '<a href="#reply">Reply</a> <a href="#report">Report</a></li>'
        for a, t in COMMENTS
    )
    return (
        f'<section id="comments" class="comments"><h2>{len(COMMENTS)} comments</h2><ol>{items}</ol>'
        '<form><textarea name="c" placeholder="Join the discussion"></textarea><button>Post</button></form>'
        "</section>"
    )


def _newsletter() -> str:
    return (
        '<div class="newsletter"><h3>Get the morning briefing</h3><p>The day\'s top stories in your inbox '
        'every weekday at seven.</p><input type="email" placeholder="Email address"><button>Sign up</button>'
        "</div>"
    )


def _body_html(a: dict, split: bool) -> str:
    parts = []
    for para in a["body"]:
        if para.startswith("## "):
            parts.append(f"<h2>{_esc(para[3:])}</h2>")
        else:
            parts.append(f"<p>{_esc(para)}</p>")
    if not split:
        return '<div class="article-body">' + "\n".join(parts) + "</div>"
    # Split over several sibling <div>s with an advert and a "read more" box between them, inside one
    # body section (the layout of, e.g., the New York Times' story pages).
    chunks = [parts[i : i + 2] for i in range(0, len(parts), 2)]
    out = ['<section name="articleBody" class="meteredContent">']
    for i, chunk in enumerate(chunks):
        out.append(
            '<div class="StoryBodyCompanionColumn"><div class="css-53u6y8">'
            + "\n".join(chunk)
            + "</div></div>"
        )
        if i == 0:
            out.append('<div class="ad-slot"><span>Advertisement</span></div>')
        if i == 1:
            out.append(
                '<div class="read-more"><strong>Read more:</strong> '
                '<a href="/story/9">Rail operator reports record passenger numbers</a></div>'
            )
    out.append("</section>")
    return "\n".join(out)


def page(a: dict) -> str:
    layout = a["layout"]
    head = (
        f'<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8"><title>{_esc(a["headline"])} | '
        "The Daily Meridian</title>"
        f'<meta name="description" content="{_esc(a["standfirst"] or a["body"][0][:120])}">'
        f'<meta property="og:title" content="{_esc(a["headline"])}">'
        '<meta property="og:site_name" content="The Daily Meridian">'
        f'<meta property="article:published_time" content="2026-03-1{len(a["name"]) % 9}T08:30:00Z">'
        f'<link rel="canonical" href="https://meridian.example/news/{a["name"]}">'
        '<link rel="stylesheet" href="/static/site.css"><script src="/static/app.js"></script>'
        + _bulk(len(a["name"]))
        + "<script>window.dataLayer=window.dataLayer||[];dataLayer.push({page:'article'});</script></head><body>"
    )
    standfirst = f'<p class="standfirst">{_esc(a["standfirst"])}</p>' if a["standfirst"] else ""
    byline = (
        '<div class="byline">By <a href="/authors/staff">Staff reporter</a> · '
        '<time datetime="2026-03-12T08:30:00Z">12 March 2026</time> · '
        '<a href="#comments">Comments</a> · <button>Share</button></div>'
    )
    article = (
        f'<article class="story"><header><h1>{_esc(a["headline"])}</h1>{standfirst}</header>{byline}'
        + _body_html(a, split=layout in ("split_divs", "everything"))
        + '<div class="tags">Topics: <a href="/t/local">Local</a> <a href="/t/news">News</a></div></article>'
    )
    pieces = [head]
    if layout in ("sidebar_cookie", "everything"):
        pieces.append(_cookie())
    pieces.append(_nav())
    pieces.append('<main class="layout"><div class="col-main">')
    pieces.append(article)
    if layout in ("related", "everything", "nav_footer"):
        pieces.append(_related())
    if layout in ("comments", "everything"):
        pieces.append(_comments())
    pieces.append("</div>")
    if layout in ("sidebar_cookie", "everything", "comments", "split_divs"):
        pieces.append(_most_read())
    pieces.append(_newsletter())
    pieces.append("</main>")
    pieces.append(_footer())
    pieces.append("</body></html>\n")
    return "\n".join(pieces)


def expected(a: dict) -> str:
    return "\n".join(p[3:] if p.startswith("## ") else p for p in a["body"])


# The seventh page has the layout of a tech-news site whose article body is text between <br>s (no <p>),
# next to a "guides" sidebar whose blurbs are <p>s inside links: trafilatura with links kept (the old
# Markdown settings) took the sidebar for the article there (recall 0.08 on such a page of the public
# article-extraction benchmark), while main content took the article.
GUIDE_SIDEBAR_BODY = [
    "Following the new larger laptop, the company plans to release a smaller model with the reworked keyboard "
    "in the first half of next year, according to supply chain sources cited by a trade publication.",
    "The report claims the display size will remain the same, although given the source, we would not "
    "completely rule out hopes of a larger display. Two suppliers are said to provide the keyboards.",
    "The larger laptop features a redesigned keyboard, largely based on the standalone desktop keyboard. Given "
    "the tried and tested design, the keyboard should prove far more reliable than the previous one.",
    "The larger model also features a physical escape key and an inverted arrow key layout. It is unclear if "
    "the smaller model will follow suit when it arrives next year.",
    "Analysts have predicted that the company will move its entire notebook lineup to the new keyboard "
    "next year, including every professional and every lightweight model it sells.",
    "It would be hardly surprising if the company moved past the old keyboards completely, since they have "
    "suffered from sticky, repeating or unresponsive keys ever since their introduction four years ago.",
    "The company continues to offer free repairs to affected customers as part of a worldwide service "
    "programme, which covers most notebooks sold with the old design for four years after their first sale.",
    "Early reviews of the larger laptop praised the keyboard for its deeper travel and quieter keys, and "
    "several reviewers said that it was the best keyboard the company had shipped in a notebook in years.",
    "The smaller model is also expected to gain a faster processor and more memory, although the report "
    "did not say whether its price would change from the current starting price.",
    "The entry level model was last updated in July, while higher end models were refreshed in May.",
]
GUIDES = [
    ("Night Mode", "Night mode is an automatic setting which takes advantage of the new wide angle camera in "
     "the latest phones. It is equipped with a larger sensor that lets in more light."),
    ("Phone versus Phone Pro", "The company is separating the new phones into its usual low cost versus high "
     "cost categories, with big differences coming down to the camera, display and battery."),
    ("Phone versus last year", "At first glance the two devices have quite a few similarities, but the new "
     "phone takes a step forward in regards to cameras, battery life and more."),
    ("Watch Series 5", "The fifth generation watch brings an always on display, a compass and international "
     "emergency calling to the lineup this fall."),
]  # fmt: skip


def guide_sidebar_page() -> str:
    body = GUIDE_SIDEBAR_BODY[:2] + [GUIDE_SIDEBAR_BODY[2] + ' Read <a href="/guide/k2/">our guide</a>.']
    text = "\n<br> <br>".join(body + GUIDE_SIDEBAR_BODY[3:])
    guides = "".join(
        f'<li><a class="image" href="/guide/g{i}/"><img src="/g{i}.jpg"></a><div class="text">'
        f'<a class="product-title" href="/guide/g{i}/">{t}</a><a href="/guide/g{i}/"><p>{b}</p></a></div></li>'
        for i, (t, b) in enumerate(GUIDES)
    )
    return f"""<!DOCTYPE html><html><head><title>Smaller Laptop With New Keyboard Expected Next Year</title></head><body>
<div id="header"><ul><li><a href="/">Home</a></li><li><a href="/roundups/">Roundups</a></li></ul></div>
<div id="contentContainer"><div id="content"><div class="wrapper">
<div class="article"><h1 class="title">Smaller Laptop With New Keyboard Expected Next Year</h1>
<div class="byline">Monday November 18 by <a href="/author/x/">A Writer</a></div>
<div class="content">{text}
<br><br></div></div>
</div></div>
<div id="right"><div id="guide-products"><h3>Guides</h3><ul>{guides}</ul></div></div></div>
<div id="footer"><a href="/about/">About</a> <a href="/contact/">Contact</a></div></body></html>
"""


def main(out: Path = OUT) -> int:
    out.mkdir(parents=True, exist_ok=True)
    pages = [(a["name"], page(a), expected(a)) for a in ARTICLES]
    pages.append(("guide-sidebar", guide_sidebar_page(), "\n".join(GUIDE_SIDEBAR_BODY)))
    with open(out / "expected.jsonl", "w", encoding="utf-8") as fh:
        for name, html_text, text in pages:
            (out / f"{name}.html").write_text(html_text, encoding="utf-8")
            fh.write(json.dumps({"page": f"{name}.html", "text": text}, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=OUT, help=f"directory to write (default {OUT})")
    sys.exit(main(ap.parse_args().out))
