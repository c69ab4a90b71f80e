"""Batches and their finished lines.

``add_line`` is the per-line idempotency: an insert that ignores a second result for the same
``(batch_id, line)`` and bumps the batch's counters only when the row is new, in the caller's
transaction, so counters always equal the rows behind them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.jobs_models import BatchLineRow, BatchRow
from alize.store.repositories._sql import upsert_insert


class BatchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: BatchRow) -> None:
        self._session.add(row)
        await self._session.flush()

    async def get(self, batch_id: str, project_id: str | None = None) -> BatchRow | None:
        """The batch; with ``project_id``, only if it belongs to that project."""
        row = await self._session.get(BatchRow, batch_id, populate_existing=True)
        if row is None or (project_id is not None and row.project_id != project_id):
            return None
        return row

    async def list(
        self,
        project_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        offset: int = 0,
        statuses: Collection[str] | None = None,
        created_after: datetime | None = None,
        model: str | None = None,
    ) -> Sequence[BatchRow]:
        """Newest first; ``after`` is the id the previous page ended with."""
        query = self._filtered(sa.select(BatchRow), project_id, statuses, created_after, model)
        if after is not None:
            cursor = await self.get(after, project_id)
            if cursor is not None:
                mark = sa.tuple_(
                    sa.literal(cursor.created_at, BatchRow.created_at.type), sa.literal(cursor.id)
                )
                query = query.where(sa.tuple_(BatchRow.created_at, BatchRow.id) < mark)
        query = query.order_by(BatchRow.created_at.desc(), BatchRow.id.desc()).offset(offset).limit(limit)
        return (await self._session.execute(query)).scalars().all()

    @staticmethod
    def _filtered(
        query: Any,
        project_id: str,
        statuses: Collection[str] | None,
        created_after: datetime | None,
        model: str | None,
    ) -> Any:
        query = query.where(BatchRow.project_id == project_id)
        if statuses:
            query = query.where(BatchRow.status.in_(list(statuses)))
        if created_after is not None:
            query = query.where(BatchRow.created_at >= created_after)
        if model is not None:
            query = query.where(BatchRow.model == model)
        return query

    async def count(
        self,
        project_id: str,
        statuses: Collection[str] | None = None,
        created_after: datetime | None = None,
        model: str | None = None,
    ) -> int:
        query = sa.select(sa.func.count()).select_from(BatchRow)
        query = self._filtered(query, project_id, statuses, created_after, model)
        return int((await self._session.execute(query)).scalar_one())

    async def transition(self, batch_id: str, from_states: Collection[str], values: dict[str, Any]) -> bool:
        """Update the batch only while its status is one of ``from_states``."""
        result = await self._session.execute(
            sa.update(BatchRow)
            .where(BatchRow.id == batch_id, BatchRow.status.in_(list(from_states)))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def using_file(self, file_id: str, live_states: Collection[str]) -> str | None:
        """A batch not yet over that reads this file, if any."""
        rows = await self._session.execute(
            sa.select(BatchRow.id, BatchRow.input_file_ids).where(BatchRow.status.in_(list(live_states)))
        )
        for batch_id, inputs in rows.all():
            if file_id in (inputs or []):
                return str(batch_id)
        return None

    async def add_line(self, values: dict[str, Any], ok: bool) -> bool:
        """Record a finished line once; ``True`` if it was new (and the counters moved)."""
        stmt = (
            upsert_insert(self._session, BatchLineRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["batch_id", "line"])
            .returning(BatchLineRow.line)
        )
        if (await self._session.execute(stmt)).scalar_one_or_none() is None:
            return False
        await self._session.execute(
            sa.update(BatchRow)
            .where(BatchRow.id == values["batch_id"])
            .values(
                completed=BatchRow.completed + (1 if ok else 0),
                failed=BatchRow.failed + (0 if ok else 1),
                prompt_tokens=BatchRow.prompt_tokens + values["prompt_tokens"],
                completion_tokens=BatchRow.completion_tokens + values["completion_tokens"],
                cached_tokens=BatchRow.cached_tokens + values["cached_tokens"],
            )
            .execution_options(synchronize_session=False)
        )
        return True

    async def done_lines(self, batch_id: str) -> set[int]:
        result = await self._session.execute(
            sa.select(BatchLineRow.line).where(BatchLineRow.batch_id == batch_id)
        )
        return set(result.scalars().all())

    async def outputs(
        self, batch_id: str, *, ok: bool, after_line: int = -1, limit: int = 1000
    ) -> Sequence[tuple[int, str]]:
        """``(line, output)`` of successful (``ok``) or failed lines, in input order, a page at a time."""
        status = BatchLineRow.status_code.between(200, 299)
        result = await self._session.execute(
            sa.select(BatchLineRow.line, BatchLineRow.output)
            .where(
                BatchLineRow.batch_id == batch_id,
                BatchLineRow.line > after_line,
                status if ok else sa.not_(status),
            )
            .order_by(BatchLineRow.line)
            .limit(limit)
        )
        return [(int(line), str(output)) for line, output in result.all()]

    async def delete_lines(self, batch_id: str) -> None:
        await self._session.execute(
            sa.delete(BatchLineRow)
            .where(BatchLineRow.batch_id == batch_id)
            .execution_options(synchronize_session=False)
        )
