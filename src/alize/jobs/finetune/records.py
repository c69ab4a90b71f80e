"""Fine-tuning jobs as stored: what the API shows and what the queue handler updates.

One row per job (``fine_tuning_jobs``) and one row per event (``fine_tuning_events``). The
service owns every transaction and generates ids and timestamps; the API layer only renders
:class:`FineTuningJob` and :class:`JobEvent` in OpenAI's or Mistral's shape.

Status, the one state machine both APIs are drawn from::

    validating_files ──▶ queued ──▶ running ──▶ succeeded | failed | cancelled
          │   └──(Mistral, auto_start false)──▶ validated ──/start──▶ queued
          └──▶ failed (a file did not validate)

``cancel_requested`` is set while a running job is being stopped (Mistral's
``CANCELLATION_REQUESTED``).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alize.errors import NotFoundError
from alize.store.database import Database
from alize.store.ids import new_id, utc_now
from alize.store.jobs_models import FineTuningEventRow, FineTuningJobRow
from alize.store.repositories import FineTuningRepository

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
#: what ``/events`` lists (checkpoints have their own list)
EVENT_TYPES = ("message", "metrics")


@dataclass(frozen=True, slots=True)
class FineTuningJob:
    id: str
    project_id: str
    key_id: str | None
    api: str
    model: str
    training_files: list[dict[str, Any]]
    validation_file: str | None
    suffix: str
    hyperparameters: dict[str, Any]
    auto_start: bool
    metadata: dict[str, Any] | None
    status: str
    cancel_requested: bool
    job_id: str | None
    fine_tuned_model: str | None
    trained_tokens: int | None
    step: int
    total_steps: int | None
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    estimated_finish: datetime | None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: str
    job_id: str
    seq: int
    type: str
    level: str
    message: str
    data: dict[str, Any] | None
    created_at: datetime


def _job(row: FineTuningJobRow) -> FineTuningJob:
    return FineTuningJob(
        id=row.id,
        project_id=row.project_id,
        key_id=row.key_id,
        api=row.api,
        model=row.model,
        training_files=list(row.training_files or []),
        validation_file=row.validation_file,
        suffix=row.suffix,
        hyperparameters=dict(row.hyperparameters or {}),
        auto_start=row.auto_start,
        metadata=row.metadata_,
        status=row.status,
        cancel_requested=row.cancel_requested,
        job_id=row.job_id,
        fine_tuned_model=row.fine_tuned_model,
        trained_tokens=row.trained_tokens,
        step=row.step,
        total_steps=row.total_steps,
        error=row.error,
        result=row.result,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        estimated_finish=row.estimated_finish,
    )


def _event(row: FineTuningEventRow) -> JobEvent:
    return JobEvent(
        id=row.id,
        job_id=row.fine_tuning_job_id,
        seq=row.seq,
        type=row.type,
        level=row.level,
        message=row.message,
        data=row.data,
        created_at=row.created_at,
    )


def _not_found(job_id: str) -> NotFoundError:
    return NotFoundError(f"No fine-tuning job '{job_id[:64]}'", param="fine_tuning_job_id")


class FineTuningRecords:
    """Reads and writes of jobs and events; every lookup by a client is scoped to its project."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.db = db
        self.clock = clock

    def new_row(self, **values: Any) -> FineTuningJobRow:
        now = self.clock()
        return FineTuningJobRow(
            id=new_id("ftjob"),
            cancel_requested=False,
            step=0,
            created_at=now,
            updated_at=now,
            **values,
        )

    async def get(self, job_id: str, project_id: str | None = None) -> FineTuningJob:
        async with self.db.transaction() as session:
            row = await FineTuningRepository(session).get(job_id, project_id)
        if row is None:
            raise _not_found(job_id)
        return _job(row)

    async def list(
        self, project_id: str, *, after: str | None = None, limit: int = 20, offset: int = 0
    ) -> tuple[builtins.list[FineTuningJob], int]:
        async with self.db.transaction() as session:
            repo = FineTuningRepository(session)
            rows = await repo.list(project_id, after=after, limit=limit, offset=offset)
            total = await repo.count(project_id)
        return [_job(r) for r in rows], total

    async def update(self, job_id: str, **values: Any) -> FineTuningJob:
        async with self.db.transaction() as session:
            repo = FineTuningRepository(session)
            await repo.update(job_id, {**values, "updated_at": self.clock()})
            row = await repo.get(job_id)
        if row is None:
            raise _not_found(job_id)
        return _job(row)

    def new_event(
        self, job_id: str, seq: int, message: str, *, type: str, level: str, data: dict[str, Any] | None
    ) -> FineTuningEventRow:
        return FineTuningEventRow(
            id=new_id("ftevent"),
            fine_tuning_job_id=job_id,
            seq=seq,
            type=type,
            level=level,
            message=message[:4000],
            data=data,
            created_at=self.clock(),
        )

    async def event(
        self,
        job_id: str,
        message: str,
        *,
        type: str = "message",
        level: str = "info",
        data: dict[str, Any] | None = None,
    ) -> JobEvent:
        async with self.db.transaction() as session:
            repo = FineTuningRepository(session)
            row = self.new_event(
                job_id, await repo.next_seq(job_id), message, type=type, level=level, data=data
            )
            await repo.add_event(row)
        return _event(row)

    async def events(
        self,
        job_id: str,
        project_id: str,
        *,
        types: Sequence[str] = EVENT_TYPES,
        after: str | None = None,
        limit: int = 20,
        newest_first: bool = True,
    ) -> builtins.list[JobEvent]:
        """A page of a job's events; ``after`` is the id of the last event of the previous page."""
        async with self.db.transaction() as session:
            repo = FineTuningRepository(session)
            if await repo.get(job_id, project_id) is None:
                raise _not_found(job_id)
            after_seq = None
            if after is not None:
                cursor = await repo.event(after)
                if cursor is not None and cursor.fine_tuning_job_id == job_id:
                    after_seq = cursor.seq
            rows = await repo.events(
                job_id, types=types, after_seq=after_seq, limit=limit, newest_first=newest_first
            )
        return [_event(r) for r in rows]
