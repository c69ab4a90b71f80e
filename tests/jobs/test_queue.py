"""The durable job queue on SQLite and PostgreSQL: claims are exclusive, leases expire and are
taken over, every later step needs the lease, cancellation reaches queued and running jobs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.jobs.conftest import Clock

from alize.jobs.queue import JobQueue
from alize.store import Database, open_database


async def test_a_job_is_claimed_once_and_finished_by_its_owner(db: Database, clock: Clock) -> None:
    queue = JobQueue(db, lease_s=30, clock=clock)
    job = await queue.enqueue("demo", {"n": 1}, project_id="p1")
    claimed = await queue.claim(["demo"], "w1")
    assert claimed is not None and claimed.id == job.id
    assert (claimed.state, claimed.attempts, claimed.lease_owner, claimed.payload) == (
        "running",
        1,
        "w1",
        {"n": 1},
    )
    assert await queue.claim(["demo"], "w2") is None  # leased
    assert await queue.heartbeat(job.id, "w1") is False  # renewed, no cancel asked
    assert not await queue.finish(job.id, "w2", "succeeded")  # not the owner
    assert await queue.finish(job.id, "w1", "succeeded")
    done = await queue.get(job.id)
    assert done is not None and done.state == "succeeded" and done.lease_owner is None
    assert await queue.claim(["demo"], "w2") is None


async def test_claims_only_the_kinds_asked_for_oldest_first(db: Database, clock: Clock) -> None:
    queue = JobQueue(db, lease_s=30, clock=clock)
    first = await queue.enqueue("a", {})
    clock.advance(1)
    await queue.enqueue("b", {})
    clock.advance(1)
    await queue.enqueue("a", {})
    assert await queue.claim([], "w") is None
    got = await queue.claim(["a"], "w")
    assert got is not None and got.id == first.id and got.kind == "a"
    other = await queue.claim(["b"], "w")
    assert other is not None and other.kind == "b"


async def test_an_expired_lease_is_taken_over_and_the_old_owner_is_locked_out(
    db: Database, clock: Clock
) -> None:
    queue = JobQueue(db, lease_s=10, clock=clock)
    job = await queue.enqueue("demo", {})
    assert await queue.claim(["demo"], "dead") is not None
    clock.advance(9)
    assert await queue.claim(["demo"], "w2") is None  # still leased
    clock.advance(2)
    taken = await queue.claim(["demo"], "w2")
    assert taken is not None and taken.id == job.id and taken.attempts == 2 and taken.lease_owner == "w2"
    assert await queue.heartbeat(job.id, "dead") is None  # the stalled worker learns it lost it
    assert not await queue.finish(job.id, "dead", "failed")
    assert not await queue.retry(job.id, "dead", "x", 0)
    assert await queue.finish(job.id, "w2", "succeeded")


async def test_heartbeats_keep_the_lease(db: Database, clock: Clock) -> None:
    queue = JobQueue(db, lease_s=10, clock=clock)
    job = await queue.enqueue("demo", {})
    await queue.claim(["demo"], "w1")
    for _ in range(5):
        clock.advance(8)
        assert await queue.heartbeat(job.id, "w1") is False
        assert await queue.claim(["demo"], "w2") is None


async def test_retry_waits_and_release_does_not_count_an_attempt(db: Database, clock: Clock) -> None:
    queue = JobQueue(db, lease_s=30, clock=clock)
    job = await queue.enqueue("demo", {})
    await queue.claim(["demo"], "w1")
    assert await queue.retry(job.id, "w1", "boom", 5)
    assert await queue.claim(["demo"], "w1") is None  # not due yet
    clock.advance(6)
    again = await queue.claim(["demo"], "w1")
    assert again is not None and again.attempts == 2 and again.error == "boom"
    assert await queue.release(job.id, "w1")
    resumed = await queue.claim(["demo"], "w2")
    assert resumed is not None and resumed.attempts == 2


async def test_cancel_a_queued_job_outright_and_flag_a_running_one(db: Database, clock: Clock) -> None:
    queue = JobQueue(db, lease_s=30, clock=clock)
    queued = await queue.enqueue("demo", {})
    async with db.transaction() as session:
        assert await queue.cancel(session, queued.id) == "cancelled"
    assert await queue.claim(["demo"], "w") is None
    running = await queue.enqueue("demo", {})
    await queue.claim(["demo"], "w")
    async with db.transaction() as session:
        assert await queue.cancel(session, running.id) == "requested"
    assert await queue.heartbeat(running.id, "w") is True
    await queue.finish(running.id, "w", "cancelled")
    async with db.transaction() as session:
        assert await queue.cancel(session, running.id) == "over"


async def test_concurrent_claimers_in_separate_processes_never_share_a_job(
    db: Database, clock: Clock, tmp_path: Path
) -> None:
    """Five workers, each with its own connection pool (as separate processes have), race for
    40 jobs: every job is claimed exactly once (PostgreSQL: SKIP LOCKED; SQLite: one writer)."""
    queue = JobQueue(db, lease_s=60, clock=clock)
    ids = {(await queue.enqueue("demo", {"i": i})).id for i in range(40)}
    url = db.engine.url
    others = [await open_database(url) for _ in range(5)]
    try:
        claimed: list[tuple[str, str]] = []

        async def worker(name: str, handle: Database) -> None:
            mine = JobQueue(handle, lease_s=60, clock=clock)
            while (job := await mine.claim(["demo"], name)) is not None:
                claimed.append((name, job.id))

        await asyncio.gather(*(worker(f"w{i}", handle) for i, handle in enumerate(others)))
    finally:
        for handle in others:
            await handle.close()
    assert sorted(job_id for _, job_id in claimed) == sorted(ids)
    assert len({name for name, _ in claimed}) >= 1
