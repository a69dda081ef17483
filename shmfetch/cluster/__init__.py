"""Scale-out on Redis Streams: many daemons, one job stream, one result per job (docs/SCALE.md).

``streams``: keys, entry fields and the Lua scripts (the protocol); ``intake``: the master's side
(imported only when ``[cluster] redis`` is set); ``client``: ``RedisClient``, ``enqueue`` and result
readers for the CLI and Python callers.
"""
