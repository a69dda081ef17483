"""The harness shared by the test suite and the tools: real processes on loopback, nothing mocked.

- ``net.free_port``: a free loopback port.
- ``daemon``: ``write_config``, ``Daemon`` (``shmfetch serve`` in a subprocess, one readiness check),
  ``running_daemon``.
- ``origin``: the one Python HTTP origin (``Origin`` in this process, ``OriginProcess`` in its own).
- ``pageset``: the seeded benchmark page set the origin serves and ``tools/loadgen.py --write-site`` writes.
- ``redis_server``: a real ``redis-server`` of the caller's own.

Like aiohttp.test_utils, it ships with the package (so the tools run from an installed copy) and sits
above every other package: nothing in the daemon imports it.
"""
