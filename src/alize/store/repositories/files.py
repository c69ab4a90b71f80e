"""Uploaded and generated files: rows scoped to a project, cursor pagination, expiry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.jobs_models import FileRow

Order = Literal["asc", "desc"]


class FileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: FileRow) -> None:
        self._session.add(row)
        await self._session.flush()

    async def get(self, file_id: str, project_id: str) -> FileRow | None:
        """The file only if it belongs to ``project_id`` (another project's file is not found)."""
        row = await self._session.get(FileRow, file_id)
        return row if row is not None and row.project_id == project_id else None

    async def list(
        self,
        project_id: str,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 100,
        offset: int = 0,
        order: Order = "desc",
    ) -> Sequence[FileRow]:
        """A page of the project's files by creation time; ``after`` is the id the previous page
        ended with (an unknown id starts from the beginning)."""
        query = sa.select(FileRow).where(FileRow.project_id == project_id)
        if purpose is not None:
            query = query.where(FileRow.purpose == purpose)
        if after is not None:
            cursor = await self.get(after, project_id)
            if cursor is not None:
                key = sa.tuple_(FileRow.created_at, FileRow.id)
                mark = sa.tuple_(
                    sa.literal(cursor.created_at, FileRow.created_at.type), sa.literal(cursor.id)
                )
                query = query.where(key > mark if order == "asc" else key < mark)
        if order == "asc":
            query = query.order_by(FileRow.created_at, FileRow.id)
        else:
            query = query.order_by(FileRow.created_at.desc(), FileRow.id.desc())
        result = await self._session.execute(query.offset(offset).limit(limit))
        return result.scalars().all()

    async def count(self, project_id: str, purpose: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(FileRow).where(FileRow.project_id == project_id)
        if purpose is not None:
            query = query.where(FileRow.purpose == purpose)
        return int((await self._session.execute(query)).scalar_one())

    async def delete(self, file_id: str, project_id: str) -> bool:
        result = await self._session.execute(
            sa.delete(FileRow)
            .where(FileRow.id == file_id, FileRow.project_id == project_id)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def expired(self, now: datetime, limit: int = 500) -> Sequence[FileRow]:
        result = await self._session.execute(
            sa.select(FileRow)
            .where(FileRow.expires_at.is_not(None), FileRow.expires_at <= now)
            .order_by(FileRow.expires_at)
            .limit(limit)
        )
        return result.scalars().all()

    async def delete_by_id(self, file_id: str) -> bool:
        result = await self._session.execute(
            sa.delete(FileRow).where(FileRow.id == file_id).execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def existing(self, file_ids: Iterable[str]) -> set[str]:
        """Which of these ids have a row (to find stray files on disk)."""
        ids = list(file_ids)
        if not ids:
            return set()
        result = await self._session.execute(sa.select(FileRow.id).where(FileRow.id.in_(ids)))
        return set(result.scalars().all())
