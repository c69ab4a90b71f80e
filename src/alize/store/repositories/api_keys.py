"""API keys: looked up by their visible prefix, never by secret."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.models import ApiKey


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, key: ApiKey) -> None:
        self._session.add(key)
        await self._session.flush()

    async def get(self, key_id: str) -> ApiKey | None:
        return await self._session.get(ApiKey, key_id)

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        result = await self._session.execute(sa.select(ApiKey).where(ApiKey.prefix == prefix))
        return result.scalar_one_or_none()

    async def list(self, project_id: str | None = None, *, include_revoked: bool = True) -> Sequence[ApiKey]:
        query = sa.select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if project_id is not None:
            query = query.where(ApiKey.project_id == project_id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        result = await self._session.execute(query)
        return result.scalars().all()

    async def list_by_name(self, project_id: str, name: str) -> Sequence[ApiKey]:
        result = await self._session.execute(
            sa.select(ApiKey).where(ApiKey.project_id == project_id, ApiKey.name == name)
        )
        return result.scalars().all()

    async def revoke(self, key_id: str, at: datetime) -> bool:
        """Mark a key revoked; ``False`` when it does not exist or was already revoked."""
        result = await self._session.execute(
            sa.update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=at)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def touch(self, key_id: str, at: datetime) -> None:
        await self._session.execute(
            sa.update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(last_used_at=at)
            .execution_options(synchronize_session=False)
        )
