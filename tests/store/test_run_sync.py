"""``Database.run_sync``: the hot path's transactions in one thread hop, and on SQLite the group
commit (alize.store.group_commit): works queued during a commit share the next one, a failing
work is rolled back alone, nobody hears of success before its commit, and a cancelled caller
does not cancel its work. On both backends (tests/store/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alize.store import Database
from alize.store.ids import utc_now
from alize.store.repositories import UsageWrites


def _row(request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "project_id": "p",
        "key_id": None,
        "user_id": None,
        "deployment": "d",
        "model": "m",
        "status": "success",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "cached_tokens": 0,
        "cost_micros": 2,
        "error_code": None,
        "latency_ms": 1,
        "ttft_ms": 1,
        "created_at": utc_now(),
        "served_by": None,
        "fallback": None,
        "retries": 0,
    }


def _insert(request_id: str, *, fail: bool = False) -> Any:
    def work(connection: Connection) -> bool:
        new = UsageWrites(connection).insert_once(_row(request_id))
        if fail:
            raise RuntimeError(f"{request_id} failed after its insert")
        return new

    return work


async def _ids(db: Database) -> set[str]:
    async with db.session() as session:
        rows = await session.execute(sa.text("SELECT request_id FROM usage"))
        return {r[0] for r in rows}


def _count_commits(db: Database) -> list[int]:
    commits = [0]
    twin = getattr(db, "_twin", None)
    if twin is not None:

        @sa.event.listens_for(twin.engine, "commit")
        def _count(_connection: Any) -> None:
            commits[0] += 1

    return commits


async def test_works_queued_together_share_a_commit(db: Database) -> None:
    commits = _count_commits(db)
    outcomes = await asyncio.gather(*(db.run_sync(_insert(f"r{i}")) for i in range(24)))
    assert outcomes == [True] * 24
    assert await _ids(db) == {f"r{i}" for i in range(24)}
    # the same id again is no new row
    assert await db.run_sync(_insert("r3")) is False
    if db.dialect == "sqlite":
        # 24 transactions queued at once: the first commits alone, the rest share commits
        # (64 at most in one); one commit each would be 25
        assert 2 <= commits[0] <= 4, commits


async def test_a_failing_work_fails_alone_and_the_others_commit(db: Database) -> None:
    works = [_insert(f"r{i}", fail=i in (7, 19)) for i in range(24)]
    outcomes = await asyncio.gather(*(db.run_sync(w) for w in works), return_exceptions=True)
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failed == [7, 19] and "r7 failed" in str(outcomes[7]) and "r19 failed" in str(outcomes[19])
    assert all(o is True for i, o in enumerate(outcomes) if i not in (7, 19))
    # rolled back alone: the failing works' inserts are gone, every other row is there once
    assert await _ids(db) == {f"r{i}" for i in range(24)} - {"r7", "r19"}
    assert await db.run_sync(_insert("r0")) is False


async def test_a_cancelled_caller_does_not_cancel_its_work(db: Database) -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(connection: Connection) -> bool:
        loop.call_soon_threadsafe(started.set)
        # the work holds its transaction a moment, so the caller is cancelled meanwhile
        connection.execute(sa.text("SELECT 1"))
        time.sleep(0.2)
        return UsageWrites(connection).insert_once(_row("kept"))

    task = asyncio.ensure_future(db.run_sync(slow))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await db.run_sync(_insert("after")) is True
    # on SQLite the next work queued behind it; on PostgreSQL it may run beside it
    deadline = loop.time() + 5
    while await _ids(db) != {"kept", "after"}:
        assert loop.time() < deadline, await _ids(db)
        await asyncio.sleep(0.05)
