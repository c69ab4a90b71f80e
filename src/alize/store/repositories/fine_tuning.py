"""Fine-tuning jobs and their events: rows scoped to a project, cursor pagination by creation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.jobs_models import FineTuningEventRow, FineTuningJobRow


class FineTuningRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: FineTuningJobRow) -> None:
        self._session.add(row)
        await self._session.flush()

    async def get(self, job_id: str, project_id: str | None = None) -> FineTuningJobRow | None:
        """The job; with ``project_id``, only if it belongs to that project."""
        row = await self._session.get(FineTuningJobRow, job_id, populate_existing=True)
        if row is None or (project_id is not None and row.project_id != project_id):
            return None
        return row

    async def list(
        self, project_id: str, *, after: str | None = None, limit: int = 20, offset: int = 0
    ) -> Sequence[FineTuningJobRow]:
        """Newest first; ``after`` is the id the previous page ended with."""
        query = sa.select(FineTuningJobRow).where(FineTuningJobRow.project_id == project_id)
        if after is not None:
            cursor = await self.get(after, project_id)
            if cursor is not None:
                key = sa.tuple_(FineTuningJobRow.created_at, FineTuningJobRow.id)
                mark = sa.tuple_(
                    sa.literal(cursor.created_at, FineTuningJobRow.created_at.type), sa.literal(cursor.id)
                )
                query = query.where(key < mark)
        query = query.order_by(FineTuningJobRow.created_at.desc(), FineTuningJobRow.id.desc())
        result = await self._session.execute(query.offset(offset).limit(limit))
        return result.scalars().all()

    async def count(self, project_id: str) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(FineTuningJobRow)
            .where(FineTuningJobRow.project_id == project_id)
        )
        return int((await self._session.execute(query)).scalar_one())

    async def update(self, job_id: str, values: dict[str, Any]) -> None:
        await self._session.execute(
            sa.update(FineTuningJobRow)
            .where(FineTuningJobRow.id == job_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def next_seq(self, job_id: str) -> int:
        query = sa.select(sa.func.max(FineTuningEventRow.seq)).where(
            FineTuningEventRow.fine_tuning_job_id == job_id
        )
        last = (await self._session.execute(query)).scalar_one()
        return 0 if last is None else int(last) + 1

    async def add_event(self, row: FineTuningEventRow) -> None:
        self._session.add(row)
        await self._session.flush()

    async def events(
        self,
        job_id: str,
        *,
        types: Sequence[str],
        after_seq: int | None = None,
        limit: int = 20,
        newest_first: bool = True,
    ) -> Sequence[FineTuningEventRow]:
        query = sa.select(FineTuningEventRow).where(
            FineTuningEventRow.fine_tuning_job_id == job_id, FineTuningEventRow.type.in_(list(types))
        )
        if after_seq is not None:
            query = query.where(
                FineTuningEventRow.seq < after_seq if newest_first else FineTuningEventRow.seq > after_seq
            )
        order = FineTuningEventRow.seq.desc() if newest_first else FineTuningEventRow.seq
        result = await self._session.execute(query.order_by(order).limit(limit))
        return result.scalars().all()

    async def event(self, event_id: str) -> FineTuningEventRow | None:
        return await self._session.get(FineTuningEventRow, event_id)
