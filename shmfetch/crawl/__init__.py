"""Crawls: from seed URLs to the pages they lead to, within rules (docs/CRAWL.md).

``rules`` checks a crawl request once and holds the scope test, the non-page test and the seen set;
``crawl`` runs one crawl in the master (its queue, level by level, its pages through the one intake path,
its results and summary to the caller); ``Crawls`` is what the master injects into the intake.
"""
