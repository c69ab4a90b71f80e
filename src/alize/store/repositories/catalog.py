"""Generic storage for the catalog's model cards and for deployments (opaque JSON documents).

The owning packages define what the JSON means; these repositories only store it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.models import CatalogModel, DeploymentRow
from alize.store.repositories._sql import upsert_insert


class CatalogModelRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, model_id: str) -> CatalogModel | None:
        return await self._session.get(CatalogModel, model_id, populate_existing=True)

    async def list(self) -> Sequence[CatalogModel]:
        result = await self._session.execute(
            sa.select(CatalogModel).order_by(CatalogModel.id).execution_options(populate_existing=True)
        )
        return result.scalars().all()

    async def upsert(self, model_id: str, card: dict[str, Any], now: datetime) -> None:
        """Insert, or replace the card of an existing model (``created_at`` is kept)."""
        stmt = upsert_insert(self._session, CatalogModel).values(
            id=model_id, card=card, created_at=now, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={"card": stmt.excluded.card, "updated_at": now}
        )
        await self._session.execute(stmt)

    async def delete(self, model_id: str) -> bool:
        result = await self._session.execute(sa.delete(CatalogModel).where(CatalogModel.id == model_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]


class DeploymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, name: str) -> DeploymentRow | None:
        return await self._session.get(DeploymentRow, name, populate_existing=True)

    async def list(self) -> Sequence[DeploymentRow]:
        result = await self._session.execute(
            sa.select(DeploymentRow).order_by(DeploymentRow.name).execution_options(populate_existing=True)
        )
        return result.scalars().all()

    async def upsert(self, name: str, model_id: str, config: dict[str, Any], now: datetime) -> None:
        """Insert, or replace the model and config of an existing deployment."""
        stmt = upsert_insert(self._session, DeploymentRow).values(
            name=name, model_id=model_id, config=config, created_at=now, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"model_id": stmt.excluded.model_id, "config": stmt.excluded.config, "updated_at": now},
        )
        await self._session.execute(stmt)

    async def delete(self, name: str) -> bool:
        result = await self._session.execute(sa.delete(DeploymentRow).where(DeploymentRow.name == name))
        return bool(result.rowcount)  # type: ignore[attr-defined]
