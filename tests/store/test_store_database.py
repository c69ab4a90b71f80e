"""open_database: migrations to head, connection settings, durability, URL handling."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from alize.store import Database, database_urls, open_database
from alize.store.database import MIGRATIONS_DIR
from alize.store.models import Base, Project
from alize.store.testing import postgres_schema_url, require_postgres

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.asyncio
async def test_migrations_create_every_table_and_match_the_models(db: Database) -> None:
    def diff(connection: sa.Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with db.engine.connect() as connection:
        tables = set(await connection.run_sync(lambda c: sa.inspect(c).get_table_names()))
        differences = await connection.run_sync(diff)
        version = (await connection.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert differences == []
    assert version == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


@pytest.mark.asyncio
async def test_reopening_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/nested/dir/alize.db"
    for _ in range(2):
        db = await open_database(url)
        async with db.transaction() as session:
            session.add(Project(id=f"p{_}", name=f"n{_}", currency="USD", created_at=datetime.now(UTC)))
        await db.close()
    db = await open_database(url)
    async with db.session() as session:
        assert (await session.execute(sa.select(sa.func.count()).select_from(Project))).scalar() == 2
    await db.close()


@pytest.mark.asyncio
async def test_sqlite_connections_use_wal_full_sync_and_foreign_keys(tmp_path: Path) -> None:
    db = await open_database(f"sqlite+aiosqlite:///{tmp_path}/a.db")
    try:
        async with db.session() as session:
            values = [
                (await session.execute(sa.text(f"PRAGMA {p}"))).scalar()
                for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "secure_delete")
            ]
        # synchronous 2 == FULL; secure_delete: deleted rows are zeroed (some builds default it off)
        assert values == ["wal", 2, 1, 30000, 1]
    finally:
        await db.close()


@pytest.mark.asyncio
async def test_foreign_keys_are_enforced(db: Database) -> None:
    from alize.store.models import ApiKey

    with pytest.raises(sa.exc.IntegrityError):
        async with db.transaction() as session:
            session.add(
                ApiKey(
                    id="k",
                    project_id="missing",
                    name="x",
                    prefix="alz-x",
                    salt="00",
                    hash="00",
                    scopes="inference",
                    created_at=datetime.now(UTC),
                )
            )


@pytest.mark.asyncio
async def test_timestamps_round_trip_as_aware_utc(db: Database) -> None:
    paris = timezone(timedelta(hours=1))
    moment = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=paris)
    async with db.transaction() as session:
        session.add(Project(id="p", name="n", currency="EUR", created_at=moment))
    async with db.session() as session:
        row = (await session.execute(sa.select(Project))).scalar_one()
    assert row.created_at == moment
    assert row.created_at.utcoffset() == timedelta(0)


@pytest.mark.asyncio
async def test_naive_timestamps_are_refused(db: Database) -> None:
    with pytest.raises(sa.exc.StatementError):
        async with db.transaction() as session:
            session.add(Project(id="p", name="n", currency="EUR", created_at=datetime(2025, 1, 1)))


@pytest.mark.asyncio
async def test_in_memory_sqlite_is_migrated_too() -> None:
    db = await open_database("sqlite+aiosqlite://")
    try:
        async with db.session() as session:
            assert (await session.execute(sa.select(sa.func.count()).select_from(Project))).scalar() == 0
    finally:
        await db.close()


def test_database_urls_map_drivers_and_keep_passwords() -> None:
    async_url, sync_url = database_urls("postgresql://u:secret@h/db")
    assert async_url.drivername == "postgresql+psycopg" and sync_url.drivername == "postgresql+psycopg"
    assert async_url.password == "secret"
    async_url, sync_url = database_urls("sqlite:///x.db")
    assert (async_url.drivername, sync_url.drivername) == ("sqlite+aiosqlite", "sqlite+pysqlite")
    with pytest.raises(ValueError, match="unsupported"):
        database_urls("mysql://h/db")


def test_committed_rows_survive_a_killed_process(tmp_path: Path) -> None:
    """A row committed by a process that is then SIGKILLed is there when the file is reopened."""
    path = tmp_path / "crash.db"
    child = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from datetime import UTC, datetime
        from alize.store import open_database
        from alize.store.models import Project

        async def main():
            db = await open_database("sqlite+aiosqlite:///{path}")
            async with db.transaction() as session:
                session.add(Project(id="p1", name="kept", currency="USD", created_at=datetime.now(UTC)))
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-c", child], env=env, timeout=60, capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert (tmp_path / "crash.db-wal").exists()  # the commit lives in the WAL, not yet checkpointed

    import sqlite3

    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT name FROM projects").fetchall() == [("kept",)]


@pytest.mark.asyncio
async def test_concurrent_startups_migrate_postgres_once() -> None:
    """Several workers starting together against an empty database: the advisory lock makes
    one migrate and the others find the schema at head."""
    await require_postgres()
    async with postgres_schema_url() as url:
        databases = await asyncio.gather(*(open_database(url) for _ in range(3)))
        try:
            async with databases[0].session() as session:
                versions = (await session.execute(sa.text("SELECT version_num FROM alembic_version"))).all()
            assert versions == [(ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head(),)]
        finally:
            for database in databases:
                await database.close()
