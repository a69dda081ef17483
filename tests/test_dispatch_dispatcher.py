"""The Dispatcher on real rings with its real Frontier: round robin with credit, results, re-dispatch of a
dead worker's jobs by consumer position, and the failure paths. No daemon: the test plays the workers by
taking requests from their request rings and handing result records back as the collector would."""

from __future__ import annotations

import asyncio

import pytest

from shmfetch.job import Job

from .request_path import Recorder, make_dispatcher, record, taken, worker_rings


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def url(i: int) -> str:
    return f"http://127.0.0.1:9/p/{i}"


def submit(d, sink: Recorder, ids) -> list[Job]:
    jobs = [Job(sink, i, url(i)) for i in ids]
    for job in jobs:
        d.submit(job)
    return jobs


def test_round_robin_skips_a_worker_without_credit_and_gives_it_its_turn_back(loop):
    sink = Recorder()
    with worker_rings(2) as (w0, w1):
        d = make_dispatcher(loop, [w0, w1], max_inflight=2)
        submit(d, sink, range(6))
        assert [r[1] for r in taken(w0)] == [url(0), url(2)]
        assert [r[1] for r in taken(w1)] == [url(1), url(3)]
        assert d.queued() == 2 and d.dispatched() == 4
        # worker 0's turn, but it is full: a result from worker 1 gives worker 1 the next job
        d.on_batch(w1, [record(next(iter(w1.outstanding)))])
        assert [r[1] for r in taken(w1)] == [url(4)] and taken(w0) == []
        d.on_batch(w0, [record(next(iter(w0.outstanding)))])
        assert [r[1] for r in taken(w0)] == [url(5)]
        assert d.queued() == 0


def test_credit_is_bounded_by_the_request_ring_slots(loop):
    """A request that does not fit in a worker's free slots waits, whatever max_inflight allows."""
    sink = Recorder()
    with worker_rings(1, req_slots=4, slot_size=64) as (w0,):
        d = make_dispatcher(loop, [w0], max_inflight=64)
        long_url = "http://127.0.0.1:9/" + "x" * 60  # 2 slots of 64 bytes per request
        for i in range(3):
            d.submit(Job(sink, i, long_url))
        assert {j.slots for j in w0.outstanding.values()} == {2}
        assert w0.credit_used == 4 and len(w0.outstanding) == 2 and d.queued() == 1
        tickets = [r[0] for r in taken(w0)]
        d.on_batch(w0, [record(tickets[0])])
        assert len(taken(w0)) == 1 and d.queued() == 0


def test_a_result_answers_its_client_counts_and_returns_the_credit(loop):
    sink = Recorder()
    with worker_rings(1) as (w0,):
        d = make_dispatcher(loop, [w0])
        submit(d, sink, [7])
        ((ticket, got_url, _),) = taken(w0)
        assert got_url == url(7)
        d.on_batch(w0, [record(ticket, status=200, text="héllo", body_bytes=6, retries=1)])
        (frame,) = sink.frames
        assert frame["id"] == 7 and frame["ok"] and frame["text"] == "héllo" and frame["worker"] == 0
        assert w0.outstanding == {} and w0.credit_used == 0 and d.ok_total == 1 and w0.served == 1
        st = d.frontier_stats()
        assert st["response_bytes"] == 6 and st["retries"] == 1 and st["fetch_seconds"]["count"] == 1
        d.on_batch(w0, [record(ticket, ok=False, error="timeout")])  # a stale ticket: counted, not answered
        assert len(sink.frames) == 1 and w0.served == 2


def test_a_failed_result_is_counted_by_its_code(loop):
    sink = Recorder()
    with worker_rings(1) as (w0,):
        d = make_dispatcher(loop, [w0])
        submit(d, sink, [1])
        ((ticket, _, _),) = taken(w0)
        d.on_batch(w0, [record(ticket, ok=False, error="connect_error", message="refused")])
        assert sink.frames[0]["error"] == "connect_error" and d.failures == {"connect_error": 1}


def test_orphans_go_back_in_order_with_new_tickets_and_a_strike_only_if_taken(loop):
    """Worker 0 took its first request and died: that one gets a strike, the two it never took do not.
    They go back before a job queued meanwhile, in their order, under new tickets."""
    sink = Recorder()
    with worker_rings(2) as (w0, w1):
        d = make_dispatcher(loop, [w0, w1], max_inflight=3)
        w1.alive = False  # everything goes to worker 0
        jobs = submit(d, sink, range(4))
        old = {j.ticket for j in jobs[:3]}
        assert d.queued() == 1  # job 3 waits for credit
        w0.req.get(timeout=1)
        w0.alive = False
        orphans = d.detach(w0)
        assert orphans == jobs[:3] and [j.attempts for j in orphans] == [1, 0, 0]
        assert d.handles()[0] is None and w0.outstanding == {} and w0.credit_used == 0
        w1.alive = True
        d.redispatch(orphans)
        got = taken(w1)
        assert [r[1] for r in got] == [url(0), url(1), url(2)] and not {r[0] for r in got} & old
        assert d.redispatched == 3 and d.queued() == 1


def test_a_job_taken_by_two_crashed_workers_is_answered_worker_crashed(loop):
    sink = Recorder()
    with worker_rings(2) as (w0, w1):
        d = make_dispatcher(loop, [w0, w1])
        w1.alive = False
        submit(d, sink, [0])
        for dead, live in ((w0, w1), (w1, w0)):
            dead.req.get(timeout=1)  # taken, then the worker dies
            dead.alive, live.alive = False, True
            d.attach(live)
            d.redispatch(d.detach(dead))
        (frame,) = sink.frames
        assert (
            frame["error"] == "worker_crashed"
            and frame["message"] == "the worker fetching this URL died twice"
        )
        assert d.inflight() == 0


def test_submit_answers_shutting_down_and_overloaded(loop):
    sink = Recorder()
    with worker_rings(1) as (w0,):
        w0.alive = False  # nothing is dispatched: the queue fills
        d = make_dispatcher(loop, [w0], max_pending=2)
        submit(d, sink, range(3))
        assert [f["error"] for f in sink.frames] == ["overloaded"] and sink.frames[0]["id"] == 2
        d.accepting = False
        submit(d, sink, [3])
        assert sink.by_id()[3]["error"] == "shutting_down" and sink.by_id()[3]["url"] == url(3)
        assert d.failures == {"overloaded": 1, "shutting_down": 1}


def test_fail_all_answers_every_job_waiting_or_in_flight(loop):
    sink = Recorder()
    with worker_rings(1) as (w0,):
        d = make_dispatcher(loop, [w0], max_inflight=2)
        submit(d, sink, range(5))
        assert d.dispatched() == 2 and d.queued() == 3
        assert d.fail_all("shutting_down") == 5
        assert sorted(sink.by_id()) == [0, 1, 2, 3, 4] and d.inflight() == 0 and w0.credit_used == 0


def test_a_job_whose_client_went_away_is_not_dispatched(loop):
    sink, gone = Recorder(), Recorder()
    gone.closed = True
    with worker_rings(1) as (w0,):
        d = make_dispatcher(loop, [w0])
        d.submit(Job(gone, 0, url(0)))
        d.submit(Job(sink, 1, url(1)))
        assert [r[1] for r in taken(w0)] == [url(1)]


def test_attach_hands_queued_jobs_to_a_new_worker_and_on_idle_fires_when_all_is_answered(loop):
    sink = Recorder()
    idle = []
    with worker_rings(1) as (w0,):
        d = make_dispatcher(loop, [w0], on_idle=lambda: idle.append(1))
        d.detach(w0)
        submit(d, sink, [0])
        assert d.queued() == 1
        d.attach(w0)
        ((ticket, _, _),) = taken(w0)
        d.on_batch(w0, [record(ticket)])
        assert idle == [1] and sink.frames[0]["ok"]


def test_a_worker_whose_threads_are_all_busy_gets_no_job_while_another_has_a_free_thread(loop):
    """2 workers x 2 threads, credit 64: with worker 0's threads both busy, the next jobs go to worker 1
    (round robin would hand worker 0 every other one, to wait in its ring behind the busy threads); when
    neither has a free thread they wait in the master, and go to the first worker that frees one."""
    sink = Recorder()
    with worker_rings(2) as (w0, w1):
        d = make_dispatcher(loop, [w0, w1], max_inflight=64, threads=2)
        submit(d, sink, range(4))  # 0 and 2 on worker 0, 1 and 3 on worker 1
        assert [r[1] for r in taken(w0)] == [url(0), url(2)]
        w1_tickets = [r[0] for r in taken(w1)]
        d.on_batch(w1, [record(t) for t in w1_tickets])  # worker 1 is free again; worker 0 still busy
        submit(d, sink, range(4, 8))
        assert taken(w0) == []
        assert [r[1] for r in taken(w1)] == [url(4), url(5)]
        assert d.queued() == 2 and d.free_capacity() == -2
        d.on_batch(w0, [record(next(iter(w0.outstanding)))])  # worker 0 frees a thread first
        assert [r[1] for r in taken(w0)] == [url(6)] and taken(w1) == [] and d.queued() == 1


def test_free_capacity_counts_free_fetch_threads_within_credit(loop):
    with worker_rings(2) as (w0, w1):
        assert make_dispatcher(loop, [w0, w1], max_inflight=64, threads=4).free_capacity() == 8
        assert make_dispatcher(loop, [w0, w1], max_inflight=3, threads=4).free_capacity() == 6
