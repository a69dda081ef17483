"""The master's view of one worker process: its pid, its two rings (one generation) and its open jobs."""

from __future__ import annotations

import asyncio
import threading
import time

from ..ipc.ring import Ring
from ..job import Job


class WorkerHandle:
    """One worker generation as the dispatcher and the master see it.

    ``outstanding`` holds the jobs put into its request ring and not answered yet (by ticket);
    ``credit_used`` the ring slots they take.
    """

    def __init__(self, index: int, generation: int, req: Ring, res: Ring):
        self.index = index
        self.generation = generation
        self.req = req
        self.res = res
        self.pid = 0
        self.alive = False
        self.outstanding: dict[int, Job] = {}
        self.credit_used = 0
        self.ok_received = 0
        self.served = 0
        self.started = time.monotonic()
        self.last_progress = self.started
        self.collector: threading.Thread | None = None
        self.drained = asyncio.Event()

    def has_credit(self, job: Job, max_inflight: int) -> bool:
        """Whether ``job`` fits: fewer than ``max_inflight`` open jobs, and free slots in the request ring."""
        return len(self.outstanding) < max_inflight and self.credit_used + job.slots <= self.req.nslots
