"""Serving processes (``gateway_instances``): register, heartbeat, list, forget."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.models import GatewayInstance


class InstanceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, instance: GatewayInstance) -> None:
        self._session.add(instance)
        await self._session.flush()

    async def heartbeat(self, instance_id: str, now: datetime) -> bool:
        result = await self._session.execute(
            sa.update(GatewayInstance)
            .where(GatewayInstance.id == instance_id)
            .values(heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def all(self) -> Sequence[GatewayInstance]:
        return (await self._session.execute(sa.select(GatewayInstance))).scalars().all()

    async def delete(self, instance_ids: Sequence[str]) -> None:
        if instance_ids:
            await self._session.execute(
                sa.delete(GatewayInstance).where(GatewayInstance.id.in_(instance_ids))
            )
