"""Monthly budgets: reserve before a request, settle to the actual cost after, release on failure.

Money is integer micro-units of the project's currency. Admission is one conditional UPDATE of
the project's row for the current UTC month (``spent + reserved + amount <= budget``), which is
atomic on SQLite and PostgreSQL alike, so concurrent requests can never together reserve more
than the budget. Each reservation is also a row whose state moves ``held`` -> ``settled`` or
``released`` exactly once, so a retried settle cannot double-charge, and holds left behind by a
crashed worker can be found and released (``release_orphaned``, run by
:class:`alize.gateway.holds.HoldSweeper`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from alize.errors import InsufficientQuotaError, NotFoundError
from alize.store.database import Database
from alize.store.ids import new_id, utc_now
from alize.store.models import Project
from alize.store.repositories import BudgetRepository, BudgetWrites, ProjectRepository


def cost_micros(
    prompt_tokens: int,
    completion_tokens: int,
    price_in_per_million: int,
    price_out_per_million: int,
) -> int:
    """Cost in micro-units, with prices in micro-units per million tokens, rounded up.

    Exact integer arithmetic: ``ceil((p * price_in + c * price_out) / 1e6)``.
    """
    if min(prompt_tokens, completion_tokens, price_in_per_million, price_out_per_million) < 0:
        raise ValueError("token counts and prices must be >= 0")
    numerator = prompt_tokens * price_in_per_million + completion_tokens * price_out_per_million
    return -(-numerator // 1_000_000)


def period_of(moment: datetime) -> str:
    """The budget period (UTC calendar month) of a moment: ``"2025-03"``."""
    return moment.astimezone(UTC).strftime("%Y-%m")


def next_period_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    project_id: str
    period: str
    amount_micros: int


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    project_id: str
    period: str
    budget_micros: int | None
    spent_micros: int
    reserved_micros: int

    @property
    def remaining_micros(self) -> int | None:
        if self.budget_micros is None:
            return None
        return max(0, self.budget_micros - self.spent_micros - self.reserved_micros)


async def _project(session: AsyncSession, project_id: str) -> Project:
    project = await ProjectRepository(session).get(project_id)
    if project is None:
        raise NotFoundError(f"Project '{project_id}' not found.")
    return project


class BudgetService:
    def __init__(
        self, db: Database, *, owner: str | None = None, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._db = db
        #: the gateway instance whose holds these are (see alize.gateway.holds)
        self.owner = owner
        self._clock = clock

    async def reserve(self, project_id: str, amount_micros: int) -> Reservation:
        """Hold ``amount_micros`` of this month's budget, or raise ``InsufficientQuotaError``.

        Projects without a budget always succeed (the hold still tracks spend per month). One
        transaction, in one hop (``Database.run_sync``): it is on every request's path.
        """
        if amount_micros < 0:
            raise ValueError("a reservation cannot be negative")
        now = self._clock()
        period = period_of(now)
        reservation = Reservation(new_id("res"), project_id, period, amount_micros)

        def hold(connection: Connection) -> bool:
            writes = BudgetWrites(connection)
            exists, budget = writes.budget_of(project_id)
            if not exists:
                raise NotFoundError(f"Project '{project_id}' not found.")
            writes.ensure_period(project_id, period, now)
            if not writes.try_reserve(project_id, period, amount_micros, budget, now):
                return False
            writes.add_reservation(
                {
                    "id": reservation.id,
                    "project_id": project_id,
                    "period": period,
                    "amount_micros": amount_micros,
                    "state": "held",
                    "owner": self.owner,
                    "created_at": now,
                }
            )
            return True

        # not durable: a hold means nothing once its request is gone, and a power cut takes the
        # request with it (Database's docstring); this saves a sync before the engine is reached
        if not await self._db.run_sync(hold, durable=False):
            retry = (next_period_start(now) - now).total_seconds()
            raise InsufficientQuotaError(
                "You exceeded your current quota: this project's monthly budget is spent. "
                "Ask an administrator to raise it.",
                retry_after=retry,
            )
        return reservation

    def close_with(self, connection: Connection, reservation_id: str, actual_micros: int | None) -> bool:
        """Replace a hold by ``actual_micros`` (settled), or drop it (``None``: released), inside
        the caller's transaction (``Database.run_sync``): the pipeline charges a request in the
        transaction that writes its ledger row, so the row and the charge commit together.
        ``False`` if the hold was already closed."""
        if actual_micros is not None and actual_micros < 0:
            raise ValueError("a cost cannot be negative")
        now = self._clock()
        state, amount = ("released", 0) if actual_micros is None else ("settled", actual_micros)
        writes = BudgetWrites(connection)
        closed = writes.close_reservation(reservation_id, state, amount, now)
        if closed is None:
            return False
        writes.apply(
            closed.project_id,
            closed.period,
            reserved_delta=-closed.amount_micros,
            spent_delta=amount,
            now=now,
        )
        return True

    async def _close(self, reservation_id: str, actual_micros: int | None) -> bool:
        return await self._db.run_sync(
            lambda connection: self.close_with(connection, reservation_id, actual_micros)
        )

    async def settle(self, reservation: Reservation, actual_micros: int) -> bool:
        """Replace the hold by the actual cost (may exceed the hold). ``False`` if already closed."""
        if actual_micros < 0:
            raise ValueError("a cost cannot be negative")
        return await self._close(reservation.id, actual_micros)

    async def release(self, reservation: Reservation) -> bool:
        """Drop the hold without charging. ``False`` if already closed."""
        return await self._close(reservation.id, None)

    async def release_stale(self, older_than: timedelta) -> int:
        """Release holds older than ``older_than`` (left by a crashed worker); returns how many."""
        before = self._clock() - older_than
        async with self._db.transaction() as session:
            stale = await BudgetRepository(session).held_before(before)
        return await self._release_all([row.id for row in stale])

    async def release_orphaned(self, live_owners: Sequence[str], max_age: timedelta) -> int:
        """Release the holds no live instance owns (see ``BudgetRepository.orphaned``)."""
        async with self._db.transaction() as session:
            stale = await BudgetRepository(session).orphaned(live_owners, self._clock() - max_age)
        return await self._release_all([row.id for row in stale])

    async def _release_all(self, reservation_ids: Sequence[str]) -> int:
        released = 0
        for reservation_id in reservation_ids:
            released += await self._close(reservation_id, None)
        return released

    async def status(self, project_id: str) -> BudgetStatus:
        now = self._clock()
        period = period_of(now)
        async with self._db.transaction() as session:
            project = await _project(session, project_id)
            row = await BudgetRepository(session).get_period(project_id, period)
            return BudgetStatus(
                project_id=project_id,
                period=period,
                budget_micros=project.monthly_budget_micros,
                spent_micros=row.spent_micros if row is not None else 0,
                reserved_micros=row.reserved_micros if row is not None else 0,
            )
