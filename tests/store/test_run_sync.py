"""``Database.run_sync``: the hot path's transactions in one thread hop, and on SQLite the group
commit (alize.store.group_commit): works queued during a commit share the next one, a failing
work is rolled back alone, nobody hears of success before its commit, and a cancelled caller
does not cancel its work. On both backends (tests/store/conftest.py)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from alize.store import Database, open_database
from alize.store.ids import utc_now
from alize.store.repositories import UsageWrites
from alize.store.testing import temporary_database


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


def _commit_level(connection: Connection) -> str:
    """What this transaction's commit will wait for: SQLite's ``synchronous`` level (it reads
    the pragma outside and inside a transaction alike), PostgreSQL's ``synchronous_commit``."""
    if connection.dialect.name == "sqlite":
        return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
            connection.exec_driver_sql("PRAGMA synchronous").scalar()
        ]
    return str(connection.exec_driver_sql("SHOW synchronous_commit").scalar())


async def test_a_work_that_need_not_be_durable_skips_the_sync_and_a_durable_one_does_not(
    db: Database,
) -> None:
    durable = await db.run_sync(_commit_level)
    light = await db.run_sync(_commit_level, durable=False)
    again = await db.run_sync(_commit_level)
    if db.dialect == "sqlite":
        assert (durable, light, again) == ("FULL", "NORMAL", "FULL")
        # queued together, one durable work makes the whole group's commit durable
        levels = await asyncio.gather(*(db.run_sync(_commit_level, durable=i == 5) for i in range(12)))
        assert levels[1:] == ["FULL"] * 11, levels
        lights = await asyncio.gather(*(db.run_sync(_commit_level, durable=False) for i in range(12)))
        assert set(lights) == {"NORMAL"}
    else:
        assert (durable, light, again) == ("on", "off", "on")
    # the light commit is a commit all the same: its writes are there for every reader
    assert await db.run_sync(_insert("light"), durable=False) is True
    assert await _ids(db) == {"light"}


async def test_an_operator_may_choose_normal_for_every_sqlite_commit(tmp_path: Path) -> None:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'normal.db'}", sqlite_synchronous="normal")
    try:
        assert await db.run_sync(_commit_level) == "NORMAL"
        assert await db.run_sync(_commit_level, durable=False) == "NORMAL"
    finally:
        await db.close()
    with pytest.raises(ValueError, match="synchronous"):
        await open_database(f"sqlite+aiosqlite:///{tmp_path / 'off.db'}", sqlite_synchronous="OFF")


_KILLED_WRITER = """
import asyncio, sys
from alize.store import open_database
from tests.store.test_run_sync import _insert

async def main():
    db = await open_database(sys.argv[1])
    assert await db.run_sync(_insert("held"), durable=False) is True
    print("committed", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_light_commit_survives_its_process_being_killed(backend: str, tmp_path: Path) -> None:
    """What ``durable=False`` keeps: the writer killed with SIGKILL right after the commit
    returned, the row is there for the next process (only a power cut may undo it)."""
    async with temporary_database(backend, tmp_path) as db:  # type: ignore[arg-type]
        url = db.engine.url.render_as_string(hide_password=False).replace("+aiosqlite", "")
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _KILLED_WRITER,
            url,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parents[2],
        )
        try:
            assert writer.stdout is not None
            assert await asyncio.wait_for(writer.stdout.readline(), 60) == b"committed\n"
        finally:
            writer.send_signal(signal.SIGKILL)
            await asyncio.wait_for(writer.wait(), 10)
        assert writer.returncode == -signal.SIGKILL
        assert await _ids(db) == {"held"}
