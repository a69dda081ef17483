"""The master process: ``arbiter`` (claims resources, composes the parts, runs the signal loop, stages the
shutdown), ``supervisor`` (spawns, reaps, buries and respawns the workers; the hang watchdog), ``stats``
(the stats document) and ``pidfile`` (the lock that proves which process owns a daemon).
"""
