"""Downloading one URL: the ``Fetcher`` (``fetcher``) with its SSRF policy (``netpolicy``), media types
and Content-Encoding (``content``) and charset detection (``charset``). Used by the workers, and by the
master for robots.txt. It turns a response into an Outcome through the extraction step it is given.
"""
