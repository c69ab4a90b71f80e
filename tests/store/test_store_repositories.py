"""Repositories for storage owned by other packages: catalog model cards and deployments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alize.store import Database
from alize.store.repositories import CatalogModelRepository, DeploymentRepository

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.asyncio
async def test_catalog_models_upsert_get_list_delete(db: Database) -> None:
    async with db.transaction() as session:
        repo = CatalogModelRepository(session)
        await repo.upsert("b-model", {"name": "B", "context": 4096}, T0)
        await repo.upsert("a-model", {"name": "A"}, T0)
    async with db.transaction() as session:
        repo = CatalogModelRepository(session)
        await repo.upsert("b-model", {"name": "B2", "tags": ["x"]}, T0 + timedelta(hours=1))
        row = await repo.get("b-model")
        assert row is not None
        assert row.card == {"name": "B2", "tags": ["x"]}
        assert (row.created_at, row.updated_at) == (T0, T0 + timedelta(hours=1))
        assert [m.id for m in await repo.list()] == ["a-model", "b-model"]
        assert await repo.delete("a-model") is True
        assert await repo.delete("a-model") is False
        assert await repo.get("a-model") is None


@pytest.mark.asyncio
async def test_deployments_upsert_get_list_delete(db: Database) -> None:
    async with db.transaction() as session:
        repo = DeploymentRepository(session)
        await repo.upsert("chat", "m1", {"replicas": 1}, T0)
        await repo.upsert("chat", "m2", {"replicas": 2, "prices": {"in": 150}}, T0 + timedelta(minutes=5))
        await repo.upsert("embed", "e1", {}, T0)
    async with db.transaction() as session:
        repo = DeploymentRepository(session)
        row = await repo.get("chat")
        assert row is not None
        assert (row.model_id, row.config, row.created_at) == (
            "m2",
            {"replicas": 2, "prices": {"in": 150}},
            T0,
        )
        assert [d.name for d in await repo.list()] == ["chat", "embed"]
        assert await repo.delete("chat") is True
        assert [d.name for d in await repo.list()] == ["embed"]
