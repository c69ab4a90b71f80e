"""The worker loop: runs handlers, renews leases, hands jobs back on stop, stops a handler
whose lease was taken over, retries failures and gives up after max_attempts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from alize.jobs.queue import FinalState, Job, JobQueue
from alize.jobs.worker import JobContext, Worker
from alize.store import Database
from alize.store.repositories import JobRepository


@dataclass
class Recorder:
    kind: str = "demo"
    max_concurrent: int = 4
    #: what run() does: "ok", "hang" (until cancelled), "fail", "wait-cancel"
    mode: str = "ok"
    runs: list[str] = field(default_factory=list)
    cancelled_runs: list[str] = field(default_factory=list)
    given_up: list[tuple[str, str]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, ctx: JobContext) -> FinalState:
        self.runs.append(ctx.job.id)
        self.started.set()
        try:
            if self.mode == "hang":
                await asyncio.Event().wait()
            if self.mode == "fail":
                raise RuntimeError("boom")
            if self.mode == "wait-cancel":
                await ctx.cancelled.wait()
                return "cancelled"
        except asyncio.CancelledError:
            self.cancelled_runs.append(ctx.job.id)
            raise
        return "succeeded"

    async def give_up(self, job: Job, reason: str) -> None:
        self.given_up.append((job.id, reason))


async def _until(predicate: Callable[[], object]) -> None:
    """Poll a condition (the queue's state lives in the database), for at most 10 s."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 10 s")


async def _state(queue: JobQueue, job_id: str) -> str:
    job = await queue.get(job_id)
    assert job is not None
    return job.state


async def test_runs_a_queued_job_at_once_when_woken(db: Database) -> None:
    queue = JobQueue(db, lease_s=30)
    handler = Recorder()
    worker = Worker(queue, [handler], poll_s=30, heartbeat_s=0.05)
    worker.start()
    try:
        job = await queue.enqueue("demo", {})  # wakes the worker: no 30 s poll
        await _until(lambda: handler.runs == [job.id])
        await _until(lambda: not worker.running)
        assert await _state(queue, job.id) == "succeeded"
    finally:
        await worker.stop()


async def test_stop_hands_running_jobs_back_without_counting_the_attempt(db: Database) -> None:
    queue = JobQueue(db, lease_s=300)
    handler = Recorder(mode="hang")
    worker = Worker(queue, [handler], poll_s=0.05, heartbeat_s=0.05)
    worker.start()
    job = await queue.enqueue("demo", {})
    await asyncio.wait_for(handler.started.wait(), 10)
    await worker.stop()
    assert handler.cancelled_runs == [job.id]
    back = await queue.get(job.id)
    assert back is not None and (back.state, back.attempts, back.lease_owner) == ("queued", 0, None)
    other = await queue.claim(["demo"], "next")  # at once, not after the 300 s lease
    assert other is not None and other.id == job.id


async def test_a_lost_lease_stops_the_handler(db: Database) -> None:
    queue = JobQueue(db, lease_s=300)
    handler = Recorder(mode="hang")
    worker = Worker(queue, [handler], poll_s=0.05, heartbeat_s=0.05)
    worker.start()
    try:
        job = await queue.enqueue("demo", {})
        await asyncio.wait_for(handler.started.wait(), 10)
        async with db.transaction() as session:  # another worker took it over
            row = await JobRepository(session).get(job.id)
            assert row is not None
            row.lease_owner = "someone-else"
        await _until(lambda: handler.cancelled_runs == [job.id])
        assert await _state(queue, job.id) == "running"  # untouched: it is someone else's
    finally:
        await worker.stop()


async def test_cancellation_reaches_the_handler_through_heartbeats(db: Database) -> None:
    queue = JobQueue(db, lease_s=30)
    handler = Recorder(mode="wait-cancel")
    worker = Worker(queue, [handler], poll_s=0.05, heartbeat_s=0.05)
    worker.start()
    try:
        job = await queue.enqueue("demo", {})
        await asyncio.wait_for(handler.started.wait(), 10)
        async with db.transaction() as session:
            assert await queue.cancel(session, job.id) == "requested"
        await _until(lambda: not worker.running)
        assert await _state(queue, job.id) == "cancelled"
    finally:
        await worker.stop()


async def test_failures_are_retried_then_given_up(db: Database) -> None:
    queue = JobQueue(db, lease_s=30, max_attempts=2)
    handler = Recorder(mode="fail")
    worker = Worker(queue, [handler], poll_s=0.02, heartbeat_s=0.05, retry_delay_s=0)
    worker.start()
    try:
        job = await queue.enqueue("demo", {})
        await _until(lambda: handler.given_up)
        await _until(lambda: not worker.running)
        assert handler.runs == [job.id, job.id]
        assert handler.given_up[0][0] == job.id and "boom" in handler.given_up[0][1]
        assert await _state(queue, job.id) == "failed"
    finally:
        await worker.stop()


async def test_a_job_that_keeps_killing_its_workers_is_given_up(db: Database) -> None:
    """Claimed more than max_attempts times without finishing (each worker died): failed."""
    queue = JobQueue(db, lease_s=0.01, max_attempts=2)
    job = await queue.enqueue("demo", {})
    for name in ("dead-1", "dead-2"):
        assert await queue.claim(["demo"], name) is not None
        await asyncio.sleep(0.05)  # its lease runs out
    handler = Recorder()
    worker = Worker(queue, [handler], poll_s=0.02, heartbeat_s=0.05)
    worker.start()
    try:
        await _until(lambda: handler.given_up)
        assert handler.runs == [] and await _state(queue, job.id) == "failed"
    finally:
        await worker.stop()


async def test_per_kind_concurrency(db: Database) -> None:
    queue = JobQueue(db, lease_s=30)
    handler = Recorder(mode="hang", max_concurrent=1)
    worker = Worker(queue, [handler], max_jobs=4, poll_s=0.02, heartbeat_s=0.05)
    worker.start()
    try:
        for _ in range(3):
            await queue.enqueue("demo", {})
        await asyncio.wait_for(handler.started.wait(), 10)
        await asyncio.sleep(0.2)
        assert len(handler.runs) == 1 and len(worker.running) == 1
    finally:
        await worker.stop()
