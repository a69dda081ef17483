"""Shared-memory IPC between the master and its workers (the one spec is docs/RING.md).

``ring``: the single-producer single-consumer ring over a POSIX shared-memory segment, with ``membarrier``
for its fence mode; ``control``: the control segment (shared counter with its lock journal, worker slots);
``segment``: creating segments whose space is allocated up front; ``names``: object names (instance and
per-ring tokens); ``stale``: removal of dead masters' objects, proven by their control segment's life
lock; ``faults``: the crash points the tests aim at. Nothing here knows about HTTP or jobs.
"""
