"""Budget holds left by a dead process are released at start-up and by the sweep (issue 17,
fault 2); holds of live processes are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from alize.gateway.budget import BudgetService
from alize.gateway.holds import HoldSweeper, pid_alive
from alize.gateway.projects import ProjectService
from alize.store import Database
from alize.store.models import GatewayInstance
from alize.store.repositories import InstanceRepository
from alize.store.testing import temporary_database

HOST = "host-a"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(request.param, tmp_path) as database:
        yield database


def dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert not pid_alive(done.pid)
    return done.pid


async def register(db: Database, instance_id: str, pid: int, beat: datetime, host: str = HOST) -> None:
    async with db.transaction() as session:
        await InstanceRepository(session).add(
            GatewayInstance(id=instance_id, host=host, pid=pid, started_at=beat, heartbeat_at=beat)
        )


def sweeper(db: Database, clock: Clock, instance_id: str = "gw_new", pid: int | None = None) -> HoldSweeper:
    return HoldSweeper(
        db,
        BudgetService(db, owner=instance_id, clock=clock),
        instance_id=instance_id,
        interval_s=10,
        max_request_s=900,
        clock=clock,
        host=HOST,
        pid=pid if pid is not None else os.getpid(),
    )


async def reserved(db: Database, project: str, clock: Clock) -> int:
    return (await BudgetService(db, clock=clock).status(project)).reserved_micros


async def test_start_up_releases_the_hold_of_a_killed_process_on_this_host(db: Database) -> None:
    clock = Clock()
    project = (await ProjectService(db).create("p", monthly_budget_micros=1000)).id
    await register(db, "gw_killed", dead_pid(), clock.now)  # heartbeat still fresh: killed just now
    await BudgetService(db, owner="gw_killed", clock=clock).reserve(project, 700)
    assert await reserved(db, project, clock) == 700
    new = sweeper(db, clock)
    try:
        assert await new.start() == 1
        assert await reserved(db, project, clock) == 0
        status = await BudgetService(db, clock=clock).status(project)
        assert status.spent_micros == 0  # released, never charged
        async with db.transaction() as session:
            assert {i.id for i in await InstanceRepository(session).all()} == {"gw_new"}
    finally:
        await new.stop()


async def test_a_restarted_container_with_the_same_pid_releases_its_predecessors_holds(db: Database) -> None:
    clock = Clock()
    project = (await ProjectService(db).create("p")).id
    await register(db, "gw_before_restart", 1, clock.now)
    await BudgetService(db, owner="gw_before_restart", clock=clock).reserve(project, 50)
    new = sweeper(db, clock, pid=1)
    try:
        assert await new.start() == 1
    finally:
        await new.stop()


@pytest.fixture
def other() -> Iterator[subprocess.Popen[bytes]]:
    """Another live process on this host."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


async def test_holds_of_a_live_process_stay_until_it_stops_beating(
    db: Database, other: subprocess.Popen[bytes]
) -> None:
    clock = Clock()
    project = (await ProjectService(db).create("p")).id
    await register(db, "gw_live_here", other.pid, clock.now)
    await register(db, "gw_elsewhere", 4242, clock.now, host="host-b")
    await BudgetService(db, owner="gw_live_here", clock=clock).reserve(project, 10)
    await BudgetService(db, owner="gw_elsewhere", clock=clock).reserve(project, 20)
    mine = BudgetService(db, owner="gw_new", clock=clock)
    await mine.reserve(project, 40)
    new = sweeper(db, clock)
    assert await new.start() == 0
    assert await reserved(db, project, clock) == 70
    # the other host goes silent for three intervals: its hold goes, the local one stays
    clock.now += timedelta(seconds=31)
    async with db.transaction() as session:
        await InstanceRepository(session).heartbeat("gw_live_here", clock.now)
    assert await new.sweep() == 1
    assert await reserved(db, project, clock) == 50
    # the local process dies: its hold goes at the next sweep, whatever its heartbeat says
    other.kill()
    other.wait()
    assert await new.sweep() == 1
    assert await reserved(db, project, clock) == 40
    await new.stop()


async def test_a_hold_older_than_any_request_is_released_whoever_owns_it(db: Database) -> None:
    clock = Clock()
    project = (await ProjectService(db).create("p")).id
    new = sweeper(db, clock)
    await new.start()
    try:
        budget = BudgetService(db, owner="gw_new", clock=clock)
        kept = await budget.reserve(project, 5)
        clock.now += timedelta(seconds=600)
        assert await new.sweep() == 0
        clock.now += timedelta(seconds=301)
        assert await new.sweep() == 1  # past queue wait + request timeout: a leak
        assert not await budget.settle(kept, 5)  # already released: settling later charges nothing
        assert await reserved(db, project, clock) == 0
    finally:
        await new.stop()


async def test_a_clean_stop_deregisters(db: Database) -> None:
    clock = Clock()
    new = sweeper(db, clock)
    await new.start()
    await new.stop()
    async with db.transaction() as session:
        assert list(await InstanceRepository(session).all()) == []
