"""Audit log: a linear hash chain that detects edits, deletions and reordering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa

from alize.gateway.audit import GENESIS_HASH, AuditService, entry_hash
from alize.store import Database, open_database
from alize.store.models import AuditEntry
from alize.store.testing import temporary_database


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(request.param, tmp_path) as database:
        yield database


@pytest.mark.asyncio
async def test_entries_chain_from_genesis(db: Database) -> None:
    audit = AuditService(db)
    assert await audit.verify() == (True, None)
    first = await audit.append("key_admin", "project.create", "proj_1", {"name": "acme", "budget": 10})
    second = await audit.append("key_admin", "key.revoke", "key_9")
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.seq, second.prev_hash, second.details) == (2, first.hash, {})
    assert first.hash == entry_hash(
        GENESIS_HASH, 1, first.at, "key_admin", "project.create", "proj_1", first.details
    )
    assert [e.seq for e in await audit.list()] == [2, 1]
    assert [e.seq for e in await audit.list(limit=1, before_seq=2)] == [1]
    assert await audit.verify() == (True, None)


@pytest.mark.asyncio
async def test_concurrent_appends_keep_the_chain_linear(db: Database) -> None:
    audit = AuditService(db)
    await asyncio.gather(*(audit.append("a", "act", f"t{i}", {"i": i}) for i in range(30)))
    records = await audit.list(limit=100)
    assert sorted(r.seq for r in records) == list(range(1, 31))
    assert await audit.verify() == (True, None)


@pytest.mark.asyncio
async def test_appends_from_two_engines_keep_the_chain_linear(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/audit.db"
    first, second = await open_database(url), await open_database(url)
    try:
        services = [AuditService(first), AuditService(second)]
        await asyncio.gather(*(services[i % 2].append("a", "act", f"t{i}") for i in range(20)))
        assert await services[0].verify() == (True, None)
        assert len(await services[1].list(limit=50)) == 20
    finally:
        await first.close()
        await second.close()


async def _tamper(db: Database, statement: sa.Executable) -> None:
    async with db.transaction() as session:
        await session.execute(statement)


@pytest.mark.asyncio
async def test_tampering_is_detected_at_the_first_bad_entry(db: Database) -> None:
    audit = AuditService(db)
    for i in range(5):
        await audit.append("admin", "key.create", f"key_{i}", {"scopes": ["inference"]})
    await _tamper(db, sa.update(AuditEntry).where(AuditEntry.seq == 3).values(details={"scopes": ["admin"]}))
    assert await audit.verify() == (False, 3)


@pytest.mark.asyncio
async def test_deleting_or_rewriting_an_entry_is_detected(db: Database) -> None:
    audit = AuditService(db)
    for i in range(5):
        await audit.append("admin", "act", f"t{i}")
    await _tamper(db, sa.delete(AuditEntry).where(AuditEntry.seq == 2))
    assert await audit.verify() == (False, 2)

    # a forger who recomputes the edited entry's own hash still breaks the next link
    async with db.transaction() as session:
        await session.execute(sa.delete(AuditEntry))
    audit = AuditService(db)
    records = [await audit.append("admin", "act", f"t{i}") for i in range(3)]
    forged = entry_hash(records[0].hash, 2, records[1].at, "mallory", "act", "t1", {})
    await _tamper(db, sa.update(AuditEntry).where(AuditEntry.seq == 2).values(actor="mallory", hash=forged))
    assert await audit.verify() == (False, 3)


@pytest.mark.asyncio
async def test_details_must_be_json(db: Database) -> None:
    audit = AuditService(db)
    with pytest.raises(TypeError):
        await audit.append("a", "b", "c", {"when": object()})
    assert await audit.verify() == (True, None)
