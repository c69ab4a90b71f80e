"""The durable job queue: one table, any job kind, leases renewed by heartbeats.

A job is ``(kind, payload)`` plus bookkeeping; what a kind does is its handler's business
(:mod:`alize.jobs.worker`). Life of a job::

    enqueue ──▶ queued ──claim──▶ running ──finish──▶ succeeded | failed | cancelled
                  ▲  │              │  │
                  │  └─cancel──▶ cancelled (nobody held it)
                  │                 │  └─lease expires (worker died)──▶ claimable again
                  └──retry/release──┘

A claim takes a lease (``lease_s``); the worker renews it with heartbeats and learns from each
whether cancellation was requested. A worker that dies stops renewing, the lease expires, and
the next claim by any worker takes the job over (``attempts`` counts claims, so a job that keeps
killing its workers is failed after ``max_attempts``). Every step after the claim is conditional
on the lease owner: a stalled worker whose job was taken over can no longer change it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.database import Database
from alize.store.ids import new_id, utc_now
from alize.store.jobs_models import JobRow
from alize.store.repositories import JobRepository

log = logging.getLogger(__name__)

FinalState = Literal["succeeded", "failed", "cancelled"]
CancelResult = Literal["cancelled", "requested", "over"]


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    project_id: str | None
    payload: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    cancel_requested: bool
    lease_owner: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


def _job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        kind=row.kind,
        project_id=row.project_id,
        payload=dict(row.payload or {}),
        state=row.state,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        cancel_requested=row.cancel_requested,
        lease_owner=row.lease_owner,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
    )


class JobQueue:
    def __init__(
        self,
        db: Database,
        *,
        lease_s: float,
        max_attempts: int = 5,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._db = db
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self._clock = clock
        #: called after an enqueue commits (in-process workers claim at once instead of polling)
        self.listeners: list[Callable[[], None]] = []

    def _lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.lease_s)

    def add(
        self,
        session: AsyncSession,
        kind: str,
        payload: dict[str, Any],
        *,
        project_id: str | None = None,
        job_id: str | None = None,
    ) -> Job:
        """Queue a job inside the caller's transaction (with the rows it belongs to); call
        :meth:`wake` after the commit."""
        now = self._clock()
        row = JobRow(
            id=job_id or new_id("job"),
            kind=kind,
            project_id=project_id,
            payload=payload,
            state="queued",
            attempts=0,
            max_attempts=self.max_attempts,
            cancel_requested=False,
            not_before=now,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        return _job(row)

    async def enqueue(self, kind: str, payload: dict[str, Any], *, project_id: str | None = None) -> Job:
        async with self._db.transaction() as session:
            job = self.add(session, kind, payload, project_id=project_id)
        self.wake()
        return job

    def wake(self) -> None:
        for listener in self.listeners:
            listener()

    async def get(self, job_id: str) -> Job | None:
        async with self._db.transaction() as session:
            row = await JobRepository(session).get(job_id)
        return _job(row) if row is not None else None

    async def claim(self, kinds: Sequence[str], owner: str) -> Job | None:
        if not kinds:
            return None
        now = self._clock()
        async with self._db.transaction() as session:
            row = await JobRepository(session).claim(kinds, owner, now, self._lease_until(now))
        return _job(row) if row is not None else None

    async def heartbeat(self, job_id: str, owner: str) -> bool | None:
        """Renew the lease: whether cancellation was requested, or ``None`` if the lease is lost."""
        now = self._clock()
        async with self._db.transaction() as session:
            return await JobRepository(session).heartbeat(job_id, owner, now, self._lease_until(now))

    async def finish(self, job_id: str, owner: str, state: FinalState, error: str | None = None) -> bool:
        async with self._db.transaction() as session:
            return await JobRepository(session).finish(job_id, owner, state, error, self._clock())

    async def retry(self, job_id: str, owner: str, error: str, delay_s: float) -> bool:
        now = self._clock()
        async with self._db.transaction() as session:
            done = await JobRepository(session).retry(
                job_id, owner, error[:2000], now + timedelta(seconds=delay_s), now
            )
        self.wake()
        return done

    async def release(self, job_id: str, owner: str) -> bool:
        async with self._db.transaction() as session:
            done = await JobRepository(session).release(job_id, owner, self._clock())
        self.wake()
        return done

    async def cancel(self, session: AsyncSession, job_id: str) -> CancelResult:
        """Inside the caller's transaction: cancel a queued job outright (``cancelled``), flag a
        running one for its worker (``requested``), or report that it is already over."""
        repo = JobRepository(session)
        now = self._clock()
        if await repo.cancel_queued(job_id, now):
            return "cancelled"
        if await repo.request_cancel(job_id, now):
            return "requested"
        return "over"
