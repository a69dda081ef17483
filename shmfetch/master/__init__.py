"""The master process: ``arbiter`` (claims resources, runs the signal loop, stages the shutdown) and
``pidfile`` (the lock that proves which process owns a daemon).
"""
