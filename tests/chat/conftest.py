"""A migrated database with one project and two chat users, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from argon2 import PasswordHasher

from alize.chat.accounts import UserInfo, UserService
from alize.gateway.projects import ProjectService
from alize.store import Database
from alize.store.testing import temporary_database

#: cheap argon2 parameters: the tests check behaviour, not hashing cost
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(request.param, tmp_path) as database:
        yield database


@pytest_asyncio.fixture
async def users(db: Database) -> tuple[UserService, UserInfo, UserInfo]:
    await ProjectService(db).create("acme")
    service = UserService(db, FAST_HASHER)
    alice = await service.create("acme", "Alice@Example.com", "alice-password")
    bob = await service.create("acme", "bob@example.com", "bob-password!")
    return service, alice, bob
