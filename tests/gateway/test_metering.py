"""Metering: one ledger row per request id on every outcome, scoped reports, CSV export."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa

from alize.gateway.metering import MeteringService, UsageRecord, UsageStatus
from alize.store import Database
from alize.store.models import UsageRow
from alize.store.testing import temporary_database

DAY1 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
DAY2 = datetime(2025, 3, 2, 23, 59, 59, tzinfo=UTC)


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(request.param, tmp_path) as database:
        yield database


def _usage(request_id: str, **overrides: object) -> UsageRecord:
    fields: dict[str, object] = {
        "request_id": request_id,
        "project_id": "proj_a",
        "key_id": "key_1",
        "deployment": "chat",
        "model": "smollm2",
        "status": UsageStatus.SUCCESS,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_micros": 7,
        "created_at": DAY1,
    }
    fields.update(overrides)
    return UsageRecord(**fields)  # type: ignore[arg-type]


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int((await session.execute(sa.select(sa.func.count()).select_from(UsageRow))).scalar_one())


@pytest.mark.asyncio
async def test_one_row_per_request_id(db: Database) -> None:
    metering = MeteringService(db)
    assert await metering.record(_usage("req-1", latency_ms=120, ttft_ms=30)) is True
    assert await metering.record(_usage("req-1", prompt_tokens=999, status="error")) is False
    assert await _count(db) == 1
    row = await metering.get("req-1", project_id="proj_a")
    assert row is not None
    assert (row.prompt_tokens, row.status, row.latency_ms, row.ttft_ms) == (10, "success", 120, 30)
    assert await metering.get("req-1", project_id="proj_b") is None


@pytest.mark.asyncio
async def test_concurrent_duplicates_still_write_one_row(db: Database) -> None:
    metering = MeteringService(db)
    results = await asyncio.gather(*(metering.record(_usage("req-dup")) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await _count(db) == 1


@pytest.mark.asyncio
async def test_every_outcome_is_recorded(db: Database) -> None:
    metering = MeteringService(db)
    for i, status in enumerate(UsageStatus):
        await metering.record(
            _usage(f"r{i}", status=status, error_code=None if i == 0 else "x", completion_tokens=0)
        )
    assert await _count(db) == len(UsageStatus)
    [total] = await metering.report("proj_a", DAY1, DAY1 + timedelta(days=1), "project")
    assert (total.requests, total.errors) == (len(UsageStatus), len(UsageStatus) - 1)


@pytest.mark.asyncio
async def test_reports_group_and_stay_within_the_project(db: Database) -> None:
    metering = MeteringService(db)
    await metering.record(_usage("a1"))
    await metering.record(_usage("a2", deployment="embed", key_id="key_2", created_at=DAY2, cached_tokens=4))
    await metering.record(_usage("a3", status="error", prompt_tokens=3, completion_tokens=0, cost_micros=0))
    await metering.record(_usage("b1", project_id="proj_b", cost_micros=1000))
    await metering.record(_usage("a-late", created_at=DAY2 + timedelta(seconds=1)))  # outside [start, end)

    start, end = DAY1.replace(hour=0), DAY2 + timedelta(seconds=1)
    by_day = await metering.report("proj_a", start, end, "day")
    assert [(g.group, g.requests, g.errors, g.prompt_tokens, g.cost_micros) for g in by_day] == [
        ("2025-03-01", 2, 1, 13, 7),
        ("2025-03-02", 1, 0, 10, 7),
    ]
    by_deployment = await metering.report("proj_a", start, end, "deployment")
    assert [(g.group, g.requests, g.cached_tokens) for g in by_deployment] == [
        ("chat", 2, 0),
        ("embed", 1, 4),
    ]
    by_key = await metering.report("proj_a", start, end, "key")
    assert [(g.group, g.requests) for g in by_key] == [("key_1", 2), ("key_2", 1)]
    assert all(isinstance(g.cost_micros, int) for g in by_key)

    assert await metering.report("proj_missing", start, end, "day") == []
    everything = await metering.report_all_projects(start, end)
    assert [(g.group, g.cost_micros) for g in everything] == [("proj_a", 14), ("proj_b", 1000)]


@pytest.mark.asyncio
async def test_csv_export_of_rows_and_aggregates(db: Database) -> None:
    metering = MeteringService(db)
    await metering.record(_usage("r1"))
    await metering.record(_usage("r2", deployment="=HYPERLINK(evil)", created_at=DAY2))
    await metering.record(_usage("other", project_id="proj_b"))

    text = await metering.export_csv("proj_a", DAY1, DAY2 + timedelta(days=1))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["request_id"] for r in rows] == ["r1", "r2"]
    assert rows[1]["deployment"] == "'=HYPERLINK(evil)"  # never a live spreadsheet formula
    assert rows[0]["cost_micros"] == "7" and rows[0]["created_at"].startswith("2025-03-01T10:00:00")

    grouped = list(csv.DictReader(io.StringIO(await metering.export_csv("proj_a", DAY1, DAY2, "day"))))
    assert grouped == [
        {
            "group": "2025-03-01",
            "requests": "1",
            "errors": "0",
            "prompt_tokens": "10",
            "completion_tokens": "5",
            "cached_tokens": "0",
            "cost_micros": "7",
        }
    ]
    assert await metering.export_csv("proj_none", DAY1, DAY2) == ""


@pytest.mark.asyncio
async def test_invalid_records_are_refused(db: Database) -> None:
    metering = MeteringService(db)
    with pytest.raises(ValueError):
        await metering.record(_usage("neg", prompt_tokens=-1))
    with pytest.raises(ValueError):
        await metering.record(_usage(""))
