"""The caller's side: ``client`` (sync and async Python clients of the Unix socket) and ``cli`` (the
``shmfetch`` command).
"""
