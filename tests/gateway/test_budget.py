"""Monthly budgets: atomic reservations, settlement, release, and integer cost arithmetic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from alize.errors import InsufficientQuotaError, NotFoundError
from alize.gateway.budget import BudgetService, Reservation, cost_micros, next_period_start, period_of
from alize.gateway.projects import ProjectService
from alize.store import Database, open_database
from alize.store.testing import temporary_database


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(request.param, tmp_path) as database:
        yield database


@pytest.mark.parametrize(
    ("prompt", "completion", "price_in", "price_out", "expected"),
    [
        (0, 0, 150_000, 600_000, 0),
        (1_000_000, 0, 150_000, 600_000, 150_000),  # 1M input tokens at $0.15/M = 150000 micro-$
        (1, 0, 150_000, 600_000, 1),  # 0.15 micro-units rounds up to 1
        (1000, 500, 150_000, 600_000, 450),  # 150 + 300, exact
        (7, 3, 1, 1, 1),
        (10**12, 10**12, 10**9, 10**9, 2 * 10**15),  # no float overflow or rounding
    ],
)
def test_cost_micros_is_exact_and_rounds_up(
    prompt: int, completion: int, price_in: int, price_out: int, expected: int
) -> None:
    assert cost_micros(prompt, completion, price_in, price_out) == expected


def test_cost_micros_refuses_negative_values() -> None:
    with pytest.raises(ValueError):
        cost_micros(-1, 0, 1, 1)


def test_periods_are_utc_months() -> None:
    assert period_of(datetime(2025, 12, 31, 23, 30, tzinfo=UTC)) == "2025-12"
    assert next_period_start(datetime(2025, 12, 31, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)


async def _project(db: Database, budget: int | None) -> str:
    return (await ProjectService(db).create("p", monthly_budget_micros=budget)).id


@pytest.mark.asyncio
async def test_reserve_settle_release_accounting(db: Database) -> None:
    budgets = BudgetService(db)
    project_id = await _project(db, 1_000)
    a = await budgets.reserve(project_id, 400)
    b = await budgets.reserve(project_id, 400)
    status = await budgets.status(project_id)
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (0, 800, 200)

    with pytest.raises(InsufficientQuotaError) as info:
        await budgets.reserve(project_id, 300)
    error = info.value
    assert (error.status_code, error.code, error.error_type) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
    )

    assert await budgets.settle(a, 250) is True
    assert await budgets.settle(a, 999) is False  # exactly once
    assert await budgets.release(a) is False
    assert await budgets.release(b) is True
    status = await budgets.status(project_id)
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (250, 0, 750)
    await budgets.reserve(project_id, 750)
    with pytest.raises(InsufficientQuotaError):
        await budgets.reserve(project_id, 1)


@pytest.mark.asyncio
async def test_fifty_concurrent_reservations_against_a_budget_for_one(db: Database) -> None:
    budgets = BudgetService(db)
    project_id = await _project(db, 1_000)
    results = await asyncio.gather(
        *(budgets.reserve(project_id, 600) for _ in range(50)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, InsufficientQuotaError)]
    assert len(admitted) == 1 and len(refused) == 49, [r for r in results if isinstance(r, Exception)][:3]
    status = await budgets.status(project_id)
    assert status.reserved_micros == 600 and status.spent_micros == 0


@pytest.mark.asyncio
async def test_concurrent_settlements_are_not_lost(db: Database) -> None:
    budgets = BudgetService(db)
    project_id = await _project(db, None)
    holds = [await budgets.reserve(project_id, 10) for _ in range(20)]
    await asyncio.gather(*(budgets.settle(h, 7) for h in holds), *(budgets.settle(h, 7) for h in holds))
    status = await budgets.status(project_id)
    assert (status.spent_micros, status.reserved_micros, status.remaining_micros) == (140, 0, None)


@pytest.mark.asyncio
async def test_budgets_are_per_month_and_stale_holds_are_released(db: Database) -> None:
    now = [datetime(2025, 1, 31, 23, 0, tzinfo=UTC)]
    budgets = BudgetService(db, clock=lambda: now[0])
    project_id = await _project(db, 100)
    january = await budgets.reserve(project_id, 100)
    await budgets.settle(january, 100)
    with pytest.raises(InsufficientQuotaError) as info:
        await budgets.reserve(project_id, 1)
    assert info.value.retry_after == pytest.approx(3600)

    now[0] += timedelta(hours=2)  # February: a fresh budget
    forgotten = await budgets.reserve(project_id, 100)
    assert forgotten.period == "2025-02"
    with pytest.raises(InsufficientQuotaError):
        await budgets.reserve(project_id, 1)
    now[0] += timedelta(hours=1)
    assert await budgets.release_stale(timedelta(minutes=30)) == 1
    assert (await budgets.status(project_id)).reserved_micros == 0
    await budgets.reserve(project_id, 100)


@pytest.mark.asyncio
async def test_unknown_project_and_negative_amounts(db: Database) -> None:
    budgets = BudgetService(db)
    with pytest.raises(NotFoundError):
        await budgets.reserve("proj_missing", 1)
    project_id = await _project(db, 10)
    with pytest.raises(ValueError):
        await budgets.reserve(project_id, -1)


@pytest.mark.asyncio
async def test_reservations_through_separate_engines_on_one_sqlite_file(tmp_path: Path) -> None:
    """Two engines (as two worker processes would have) contend in SQLite itself, not in our lock."""
    url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    first, second = await open_database(url), await open_database(url)
    try:
        project_id = await _project(first, 1_000)
        services = [BudgetService(first), BudgetService(second)]
        results = await asyncio.gather(
            *(services[i % 2].reserve(project_id, 600) for i in range(50)), return_exceptions=True
        )
        assert sum(isinstance(r, Reservation) for r in results) == 1
        assert sum(isinstance(r, InsufficientQuotaError) for r in results) == 49
    finally:
        await first.close()
        await second.close()
