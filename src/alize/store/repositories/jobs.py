"""The job queue's SQL: claim with a lease, renew it, finish, retry, release, cancel.

Claiming is the one statement that differs by backend. PostgreSQL picks the candidate with
``FOR UPDATE SKIP LOCKED`` inside the claiming ``UPDATE``, so concurrent workers never wait on
each other's row locks and never get the same job. SQLite has one writer at a time (``BEGIN
IMMEDIATE``), so the select and a conditional ``UPDATE`` (which re-checks that the job is still
claimable) are atomic without row locks. Every later step is conditional on the lease owner, so
a worker that lost its lease (it stalled and another claimed the job) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.jobs_models import JobRow
from alize.store.repositories._sql import dialect_name


def _claimable(kinds: Sequence[str], now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        JobRow.kind.in_(list(kinds)),
        sa.or_(
            sa.and_(JobRow.state == "queued", JobRow.not_before <= now),
            sa.and_(JobRow.state == "running", JobRow.lease_expires_at < now),
        ),
    )


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: JobRow) -> None:
        self._session.add(row)
        await self._session.flush()

    async def get(self, job_id: str) -> JobRow | None:
        return await self._session.get(JobRow, job_id, populate_existing=True)

    async def claim(
        self, kinds: Sequence[str], owner: str, now: datetime, lease_until: datetime
    ) -> JobRow | None:
        """Take the oldest claimable job of these kinds (queued and due, or running with an
        expired lease), or ``None``."""
        values: dict[str, Any] = {
            "state": "running",
            "lease_owner": owner,
            "lease_expires_at": lease_until,
            "attempts": JobRow.attempts + 1,
            "started_at": sa.func.coalesce(JobRow.started_at, now),
            "updated_at": now,
        }
        candidate = (
            sa.select(JobRow.id).where(_claimable(kinds, now)).order_by(JobRow.created_at, JobRow.id).limit(1)
        )
        if dialect_name(self._session) == "postgresql":
            target = candidate.with_for_update(skip_locked=True).scalar_subquery()
            stmt = sa.update(JobRow).where(JobRow.id == target)
        else:
            job_id = (await self._session.execute(candidate)).scalar_one_or_none()
            if job_id is None:
                return None
            stmt = sa.update(JobRow).where(JobRow.id == job_id, _claimable(kinds, now))
        result = await self._session.execute(
            stmt.values(**values).returning(JobRow).execution_options(synchronize_session=False)
        )
        return result.scalar_one_or_none()

    async def heartbeat(self, job_id: str, owner: str, now: datetime, lease_until: datetime) -> bool | None:
        """Extend the lease; the job's ``cancel_requested`` flag, or ``None`` if the lease is lost."""
        result = await self._session.execute(
            sa.update(JobRow)
            .where(JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.state == "running")
            .values(lease_expires_at=lease_until, updated_at=now)
            .returning(JobRow.cancel_requested)
            .execution_options(synchronize_session=False)
        )
        flag = result.scalar_one_or_none()
        return None if flag is None else bool(flag)

    async def _owned(self, job_id: str, owner: str, values: dict[str, Any]) -> bool:
        result = await self._session.execute(
            sa.update(JobRow)
            .where(JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.state == "running")
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def finish(self, job_id: str, owner: str, state: str, error: str | None, now: datetime) -> bool:
        """End a job this worker holds (``succeeded``, ``failed`` or ``cancelled``)."""
        return await self._owned(
            job_id,
            owner,
            {
                "state": state,
                "error": error,
                "finished_at": now,
                "updated_at": now,
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )

    async def retry(self, job_id: str, owner: str, error: str, not_before: datetime, now: datetime) -> bool:
        """Put a job this worker holds back in the queue, due at ``not_before``."""
        return await self._owned(
            job_id,
            owner,
            {
                "state": "queued",
                "error": error,
                "not_before": not_before,
                "updated_at": now,
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )

    async def release(self, job_id: str, owner: str, now: datetime) -> bool:
        """Hand a job back at once without counting the attempt (the worker is stopping)."""
        return await self._owned(
            job_id,
            owner,
            {
                "state": "queued",
                "not_before": now,
                "attempts": JobRow.attempts - 1,
                "updated_at": now,
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )

    async def cancel_queued(self, job_id: str, now: datetime) -> bool:
        """Cancel a job no worker holds; ``False`` if it is running or already over."""
        result = await self._session.execute(
            sa.update(JobRow)
            .where(JobRow.id == job_id, JobRow.state == "queued")
            .values(state="cancelled", cancel_requested=True, finished_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def request_cancel(self, job_id: str, now: datetime) -> bool:
        """Flag a running job; its worker sees the flag at its next heartbeat."""
        result = await self._session.execute(
            sa.update(JobRow)
            .where(JobRow.id == job_id, JobRow.state == "running")
            .values(cancel_requested=True, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]
