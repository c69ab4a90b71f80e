"""Throwaway databases for tests: a fresh SQLite file, or a fresh PostgreSQL schema; and where the
test PostgreSQL and Redis servers are (``ALIZE_TEST_POSTGRES_URL``, ``ALIZE_TEST_REDIS_URL``).

Each PostgreSQL database gets its own schema (selected through ``search_path`` in the URL) that
is dropped afterwards, so test runs are isolated and repeatable on a shared server. Lives in the
package (not under tests/) so every test suite that needs a real database can reuse it.
"""

from __future__ import annotations

import os
import secrets
import unittest
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from alize.store.database import Database, open_database

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


@asynccontextmanager
async def temporary_database(backend: Backend, directory: Path) -> AsyncIterator[Database]:
    """A migrated, empty database of the given backend, closed (and dropped) on exit.

    For ``postgres`` the test is skipped when the server is unreachable (see ``require_postgres``).
    """
    if backend == "postgres":
        await require_postgres()
    if backend == "sqlite":
        path = directory / f"alize-{secrets.token_hex(4)}.db"
        db = await open_database(f"sqlite+aiosqlite:///{path}")
        try:
            yield db
        finally:
            await db.close()
        return
    async with postgres_schema_url() as url:
        db = await open_database(url)
        try:
            yield db
        finally:
            await db.close()
