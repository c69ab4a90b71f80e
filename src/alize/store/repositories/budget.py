"""Budget periods and reservations.

``try_reserve`` is the admission decision and is a single conditional UPDATE, so it is atomic
on both backends without any application-level locking.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.models import BudgetPeriod, BudgetReservation
from alize.store.repositories._sql import upsert_insert


class BudgetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def ensure_period(self, project_id: str, period: str, now: datetime) -> None:
        stmt = (
            upsert_insert(self._session, BudgetPeriod)
            .values(project_id=project_id, period=period, spent_micros=0, reserved_micros=0, updated_at=now)
            .on_conflict_do_nothing(index_elements=["project_id", "period"])
        )
        await self._session.execute(stmt)

    async def try_reserve(
        self, project_id: str, period: str, amount_micros: int, budget_micros: int | None, now: datetime
    ) -> bool:
        """Add ``amount_micros`` to the period's reservations if spend + holds stay within budget."""
        stmt = (
            sa.update(BudgetPeriod)
            .where(BudgetPeriod.project_id == project_id, BudgetPeriod.period == period)
            .values(reserved_micros=BudgetPeriod.reserved_micros + amount_micros, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if budget_micros is not None:
            stmt = stmt.where(
                BudgetPeriod.spent_micros + BudgetPeriod.reserved_micros + amount_micros <= budget_micros
            )
        result = await self._session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def apply(
        self, project_id: str, period: str, *, reserved_delta: int, spent_delta: int, now: datetime
    ) -> None:
        """Move money between reserved and spent (relative updates: no read-modify-write)."""
        await self._session.execute(
            sa.update(BudgetPeriod)
            .where(BudgetPeriod.project_id == project_id, BudgetPeriod.period == period)
            .values(
                reserved_micros=BudgetPeriod.reserved_micros + reserved_delta,
                spent_micros=BudgetPeriod.spent_micros + spent_delta,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )

    async def get_period(self, project_id: str, period: str) -> BudgetPeriod | None:
        return await self._session.get(BudgetPeriod, (project_id, period), populate_existing=True)

    async def add_reservation(self, reservation: BudgetReservation) -> None:
        self._session.add(reservation)
        await self._session.flush()

    async def close_reservation(
        self, reservation_id: str, state: str, actual_micros: int, now: datetime
    ) -> BudgetReservation | None:
        """Close a held reservation exactly once; ``None`` if unknown or already closed."""
        result = await self._session.execute(
            sa.update(BudgetReservation)
            .where(BudgetReservation.id == reservation_id, BudgetReservation.state == "held")
            .values(state=state, actual_micros=actual_micros, closed_at=now)
            .returning(BudgetReservation)
            .execution_options(synchronize_session=False)
        )
        return result.scalar_one_or_none()

    async def held_before(self, before: datetime, limit: int = 1000) -> Sequence[BudgetReservation]:
        result = await self._session.execute(
            sa.select(BudgetReservation)
            .where(BudgetReservation.state == "held", BudgetReservation.created_at < before)
            .order_by(BudgetReservation.created_at)
            .limit(limit)
        )
        return result.scalars().all()

    async def orphaned(
        self, live_owners: Sequence[str], before: datetime, limit: int = 1000
    ) -> Sequence[BudgetReservation]:
        """Holds no live instance owns: their owner is not live, or (owner or not) they are older
        than ``before``, the longest any request can take."""
        owned_by_dead = sa.and_(
            BudgetReservation.owner.is_not(None), BudgetReservation.owner.not_in(list(live_owners))
        )
        result = await self._session.execute(
            sa.select(BudgetReservation)
            .where(
                BudgetReservation.state == "held",
                sa.or_(owned_by_dead, BudgetReservation.created_at < before),
            )
            .order_by(BudgetReservation.created_at)
            .limit(limit)
        )
        return result.scalars().all()
