"""What the master does with a request before a worker sees it: ``admission`` (the Frontier: cache,
then robots.txt, then per-host politeness), with ``cache`` (the HTTP cache), ``robots`` and
``politeness``.
"""
