"""Budget periods and reservations.

``try_reserve`` is the admission decision and is a single conditional UPDATE, so it is atomic
on both backends without any application-level locking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.models import BudgetPeriod, BudgetReservation, Project
from alize.store.repositories._sql import dialect_name, upsert_insert_for

# The hot statements are built once, with bound parameters: SQLAlchemy then compiles each once
# and finds it again by the memoised cache key, where a statement built per call paid for its
# construction and cache key on every request (most of SQLAlchemy's share of a hold, profiled).
_b = sa.bindparam


def _ensure_period_for(dialect: str) -> Any:
    return (
        upsert_insert_for(dialect, BudgetPeriod)
        .values(project_id=_b("p_project"), period=_b("p_period"), spent_micros=0, reserved_micros=0)
        .values(updated_at=_b("p_now", type_=BudgetPeriod.__table__.c.updated_at.type))
        .on_conflict_do_nothing(index_elements=["project_id", "period"])
    )


_ENSURE_PERIOD = {dialect: _ensure_period_for(dialect) for dialect in ("sqlite", "postgresql")}
_THIS_PERIOD = sa.and_(BudgetPeriod.project_id == _b("p_project"), BudgetPeriod.period == _b("p_period"))
_RESERVE_ANY = (
    sa.update(BudgetPeriod)
    .where(_THIS_PERIOD)
    .values(reserved_micros=BudgetPeriod.reserved_micros + _b("p_amount", type_=sa.BigInteger))
    .values(updated_at=_b("p_now", type_=BudgetPeriod.__table__.c.updated_at.type))
    .execution_options(synchronize_session=False)
)
_RESERVE_WITHIN = _RESERVE_ANY.where(
    BudgetPeriod.spent_micros + BudgetPeriod.reserved_micros + _b("p_amount", type_=sa.BigInteger)
    <= _b("p_budget", type_=sa.BigInteger)
)
_APPLY = (
    sa.update(BudgetPeriod)
    .where(_THIS_PERIOD)
    .values(
        reserved_micros=BudgetPeriod.reserved_micros + _b("p_reserved", type_=sa.BigInteger),
        spent_micros=BudgetPeriod.spent_micros + _b("p_spent", type_=sa.BigInteger),
        updated_at=_b("p_now", type_=BudgetPeriod.__table__.c.updated_at.type),
    )
    .execution_options(synchronize_session=False)
)
_CLOSE = (
    sa.update(BudgetReservation)
    .where(BudgetReservation.id == _b("p_id"), BudgetReservation.state == "held")
    .values(
        state=_b("p_state"),
        actual_micros=_b("p_actual", type_=sa.BigInteger),
        closed_at=_b("p_now", type_=BudgetReservation.__table__.c.closed_at.type),
    )
    .execution_options(synchronize_session=False)
)
_CLOSE_RETURNING = _CLOSE.returning(
    BudgetReservation.project_id, BudgetReservation.period, BudgetReservation.amount_micros
)
_BUDGET_OF = sa.select(Project.monthly_budget_micros).where(Project.id == _b("p_project"))
_ADD_RESERVATION = sa.insert(BudgetReservation)


def _period(project_id: str, period: str, now: datetime) -> dict[str, Any]:
    return {"p_project": project_id, "p_period": period, "p_now": now}


def _reserve(
    project_id: str, period: str, amount_micros: int, budget_micros: int | None, now: datetime
) -> tuple[Any, dict[str, Any]]:
    params = {**_period(project_id, period, now), "p_amount": amount_micros}
    if budget_micros is None:
        return _RESERVE_ANY, params
    return _RESERVE_WITHIN, {**params, "p_budget": budget_micros}


def _apply(
    project_id: str, period: str, reserved_delta: int, spent_delta: int, now: datetime
) -> dict[str, Any]:
    return {**_period(project_id, period, now), "p_reserved": reserved_delta, "p_spent": spent_delta}


def _close(reservation_id: str, state: str, actual_micros: int, now: datetime) -> dict[str, Any]:
    return {"p_id": reservation_id, "p_state": state, "p_actual": actual_micros, "p_now": now}


@dataclass(frozen=True, slots=True)
class ClosedHold:
    """What a closed reservation held, to move between reserved and spent."""

    project_id: str
    period: str
    amount_micros: int


class BudgetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def ensure_period(self, project_id: str, period: str, now: datetime) -> None:
        await self._session.execute(
            _ENSURE_PERIOD[dialect_name(self._session)], _period(project_id, period, now)
        )

    async def try_reserve(
        self, project_id: str, period: str, amount_micros: int, budget_micros: int | None, now: datetime
    ) -> bool:
        """Add ``amount_micros`` to the period's reservations if spend + holds stay within budget."""
        result = await self._session.execute(*_reserve(project_id, period, amount_micros, budget_micros, now))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def apply(
        self, project_id: str, period: str, *, reserved_delta: int, spent_delta: int, now: datetime
    ) -> None:
        """Move money between reserved and spent (relative updates: no read-modify-write)."""
        await self._session.execute(_APPLY, _apply(project_id, period, reserved_delta, spent_delta, now))

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
            _CLOSE.returning(BudgetReservation), _close(reservation_id, state, actual_micros, now)
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


class BudgetWrites:
    """The budget's hot writes on a synchronous connection (``Database.run_sync``): a hold and
    its close, with the statements of :class:`BudgetRepository`."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def budget_of(self, project_id: str) -> tuple[bool, int | None]:
        """``(exists, monthly_budget_micros)`` of a project."""
        row = self._connection.execute(_BUDGET_OF, {"p_project": project_id}).first()
        return (False, None) if row is None else (True, row[0])

    def ensure_period(self, project_id: str, period: str, now: datetime) -> None:
        self._connection.execute(
            _ENSURE_PERIOD[self._connection.dialect.name], _period(project_id, period, now)
        )

    def try_reserve(
        self, project_id: str, period: str, amount_micros: int, budget_micros: int | None, now: datetime
    ) -> bool:
        result = self._connection.execute(*_reserve(project_id, period, amount_micros, budget_micros, now))
        return bool(result.rowcount)

    def add_reservation(self, values: dict[str, Any]) -> None:
        self._connection.execute(_ADD_RESERVATION, values)

    def close_reservation(
        self, reservation_id: str, state: str, actual_micros: int, now: datetime
    ) -> ClosedHold | None:
        """Close a held reservation exactly once; ``None`` if unknown or already closed."""
        row = self._connection.execute(
            _CLOSE_RETURNING, _close(reservation_id, state, actual_micros, now)
        ).first()
        return None if row is None else ClosedHold(row[0], row[1], row[2])

    def apply(
        self, project_id: str, period: str, *, reserved_delta: int, spent_delta: int, now: datetime
    ) -> None:
        self._connection.execute(_APPLY, _apply(project_id, period, reserved_delta, spent_delta, now))
