"""The Redis intake's own shutdown, on a real redis-server: it ends in bounded time even when a loop does
not stop at its cancel (redis-py can swallow a cancellation that lands as a command completes; a daemon
then waited for that loop forever after SIGUSR1)."""

from __future__ import annotations

import asyncio
import time

import pytest

from shmfetch.cluster.intake import TASK_STOP_GRACE, ClusterIntake
from shmfetch.config import ClusterConfig, Config, claim_idle
from shmfetch.intake import Intake

from .request_path import make_dispatcher


@pytest.mark.slow
def test_close_ends_when_a_loop_swallows_its_cancel(redis_server):
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        d = make_dispatcher(loop, [])
        cfg = Config(cluster=ClusterConfig(redis=redis_server.url))
        cluster = ClusterIntake(cfg.cluster, Intake(d.submit, cfg.fetch), d, claim_idle(cfg))
        cluster.start()

        running = True

        async def swallows_cancels() -> None:  # what the maintenance loop did inside redis-py
            while running:
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    pass

        stubborn = asyncio.ensure_future(swallows_cancels())
        cluster._tasks.append(stubborn)
        await asyncio.sleep(0.2)  # the loops run, Redis answered
        t0 = time.monotonic()
        closing = asyncio.ensure_future(cluster.close(0.1))
        await asyncio.wait({closing}, timeout=10)  # a wait that does not itself hang on a stuck close
        elapsed = time.monotonic() - t0
        running = False  # leave no task behind the test: the stubborn loop ends, and so does close()
        await stubborn
        await closing
        d.frontier.close()
        return elapsed

    elapsed = asyncio.run(scenario())
    assert elapsed < 2 * TASK_STOP_GRACE + 1.0, f"close took {elapsed:.1f}s"


def test_the_loops_stop_at_their_next_turn_once_closing(redis_server):
    """The loops' own stop condition: with their cancels swallowed they still end (the real loops, not a
    stand-in), so close() gathers every one of them."""

    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        d = make_dispatcher(loop, [])
        cfg = Config(cluster=ClusterConfig(redis=redis_server.url, claim_idle=0.2))
        cluster = ClusterIntake(cfg.cluster, Intake(d.submit, cfg.fetch), d, claim_idle(cfg))
        cluster.start()
        await asyncio.sleep(0.3)
        await asyncio.wait_for(cluster.close(0.1), 30)
        d.frontier.close()
        return [t.done() for t in cluster._tasks]

    assert all(asyncio.run(scenario()))
