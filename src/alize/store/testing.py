"""Throwaway databases for tests: a fresh SQLite file, or a fresh PostgreSQL schema; and where the
test PostgreSQL and Redis servers are (``ALIZE_TEST_POSTGRES_URL``, ``ALIZE_TEST_REDIS_URL``).

Migrating costs more than most tests (0.1 s for SQLite, 1-2 s for PostgreSQL on a busy
machine), so each process migrates once: SQLite databases are copies of one migrated file
(:func:`migrated_sqlite`), and PostgreSQL databases reuse one migrated schema (selected through
``search_path`` in the URL) whose tables are truncated before each test hands it out; a second
database wanted while that one is in use gets a fresh schema. Schemas are dropped at exit, so
runs are isolated and repeatable on a shared server. Lives in the package (not under tests/) so
every test suite that needs a real database can reuse it.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
import unittest
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from alize.store.database import Database, _upgrade_in_thread, database_urls, open_database

Backend = Literal["sqlite", "postgres"]

#: where the PostgreSQL test server is; override with ALIZE_TEST_POSTGRES_URL
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


#: where the Redis test server is; override with ALIZE_TEST_REDIS_URL
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def postgres_test_url() -> str:
    return os.environ.get("ALIZE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def redis_test_url() -> str:
    """The one place tests (and ``scripts/test_services.py``, which may point them at a throw-away
    server) read the test Redis from, so no test can quietly bypass the setting."""
    return os.environ.get("ALIZE_TEST_REDIS_URL", DEFAULT_REDIS_URL)


async def postgres_available(url: str | None = None) -> bool:
    """Whether the test PostgreSQL server answers (tests skip, or fail if it is required)."""
    engine = create_async_engine(
        url or postgres_test_url(), poolclass=NullPool, connect_args={"connect_timeout": 3}
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
        return True
    except (OSError, sa.exc.SQLAlchemyError):
        return False
    finally:
        await engine.dispose()


@asynccontextmanager
async def postgres_schema_url(base_url: str | None = None) -> AsyncIterator[URL]:
    """A URL whose connections use a brand-new schema; the schema is dropped on exit."""
    base = make_url(base_url or postgres_test_url())
    schema = f"alize_test_{secrets.token_hex(6)}"
    admin = create_async_engine(base, poolclass=NullPool)
    try:
        async with admin.begin() as connection:
            await connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield base.update_query_dict({"options": f"-csearch_path={schema}"})
        finally:
            async with admin.begin() as connection:
                await connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await admin.dispose()


def services_required() -> bool:
    """``ALIZE_TEST_REQUIRE_SERVICES=1`` (CI): a missing PostgreSQL/Redis fails instead of skipping."""
    return os.environ.get("ALIZE_TEST_REQUIRE_SERVICES", "") not in ("", "0", "false")


async def require_postgres() -> None:
    """Skip the calling test (``unittest.SkipTest``, which pytest honours) when PostgreSQL is
    down, unless services are required, in which case fail loudly."""
    if await postgres_available():
        return
    message = f"PostgreSQL not reachable at {make_url(postgres_test_url())!r}"
    if services_required():
        raise RuntimeError(message)
    raise unittest.SkipTest(message)


_sqlite_template: Path | None = None


def migrated_sqlite(path: Path) -> Path:
    """Put an empty, migrated SQLite database at ``path`` (a copy of one migrated per process)."""
    global _sqlite_template
    if _sqlite_template is None or not _sqlite_template.is_file():
        folder = Path(tempfile.mkdtemp(prefix="alize-migrated-"))
        atexit.register(shutil.rmtree, folder, True)
        template = folder / "template.db"
        _upgrade_in_thread(database_urls(f"sqlite+aiosqlite:///{template}")[1])
        _sqlite_template = template
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_sqlite_template, path)
    return path


class _SharedSchema:
    """The process's reusable migrated PostgreSQL schema: one test at a time."""

    url: URL | None = None
    schema: str | None = None
    in_use = False


_TABLES = (
    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
)
_SEQUENCES = "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()"


async def _reused(url: URL) -> Database:
    """The migrated shared schema, emptied: every table but Alembic's own is truncated (the
    migrations insert no rows, so this is what a fresh migration gives) and not migrated again."""
    engine = create_async_engine(database_urls(url)[0], pool_pre_ping=True)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("SET LOCAL lock_timeout = '20s'"))
            tables = (await connection.execute(sa.text(_TABLES))).scalars().all()
            superuser = (await connection.execute(sa.text("SHOW is_superuser"))).scalar() == "on"
            if superuser:  # DELETE without foreign-key triggers: 5-10x faster than TRUNCATE
                await connection.execute(sa.text("SET LOCAL session_replication_role = replica"))
                for table in tables:
                    await connection.execute(sa.text(f'DELETE FROM "{table}"'))
                sequences = (await connection.execute(sa.text(_SEQUENCES))).scalars().all()
                for sequence in sequences:
                    await connection.execute(sa.text(f'ALTER SEQUENCE "{sequence}" RESTART'))
            elif tables:
                names = ", ".join(f'"{table}"' for table in tables)
                await connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    except BaseException:
        await engine.dispose()
        raise
    return Database(engine)


def _drop_schema(base: URL, schema: str) -> None:
    engine = sa.create_engine(base, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    except sa.exc.SQLAlchemyError:
        pass  # the server went first (throw-away servers stop with the run)
    finally:
        engine.dispose()


async def _shared_schema() -> Database:
    if _SharedSchema.url is None:
        base = make_url(postgres_test_url())
        schema = f"alize_test_{secrets.token_hex(6)}"
        admin = create_async_engine(base, poolclass=NullPool)
        try:
            async with admin.begin() as connection:
                await connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        finally:
            await admin.dispose()
        atexit.register(_drop_schema, base, schema)
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        db = await open_database(url)  # migrates it, once
        _SharedSchema.url, _SharedSchema.schema = url, schema
        return db
    return await _reused(_SharedSchema.url)


@asynccontextmanager
async def temporary_database(backend: Backend, directory: Path) -> AsyncIterator[Database]:
    """A migrated, empty database of the given backend, closed on exit (see the module docstring).

    For ``postgres`` the test is skipped when the server is unreachable (see ``require_postgres``).
    """
    if backend == "postgres":
        await require_postgres()
    if backend == "sqlite":
        path = migrated_sqlite(directory / f"alize-{secrets.token_hex(4)}.db")
        db = await open_database(f"sqlite+aiosqlite:///{path}")
        try:
            yield db
        finally:
            await db.close()
        return
    if _SharedSchema.in_use:  # a second database at once: a schema of its own
        async with postgres_schema_url() as url:
            db = await open_database(url)
            try:
                yield db
            finally:
                await db.close()
        return
    _SharedSchema.in_use = True
    try:
        db = await _shared_schema()
        try:
            yield db
        finally:
            await db.close()
    finally:
        _SharedSchema.in_use = False
