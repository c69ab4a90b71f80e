"""Projects (tenants)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.models import Project


class ProjectRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, project: Project) -> None:
        self._session.add(project)
        await self._session.flush()

    async def get(self, project_id: str) -> Project | None:
        return await self._session.get(Project, project_id)

    async def get_by_name(self, name: str) -> Project | None:
        result = await self._session.execute(sa.select(Project).where(Project.name == name))
        return result.scalar_one_or_none()

    async def list(self) -> Sequence[Project]:
        result = await self._session.execute(sa.select(Project).order_by(Project.created_at, Project.id))
        return result.scalars().all()

    async def delete(self, project_id: str) -> bool:
        result = await self._session.execute(sa.delete(Project).where(Project.id == project_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]
