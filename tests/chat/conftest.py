"""A migrated database with one project and two chat users, on SQLite and PostgreSQL; and a real
policy pipeline over scripted deployments (``echo``, ``error-mid-stream`` and the embeddings
model ``bag``) for the services that call the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from argon2 import PasswordHasher
from tests.support.scripted_engine import ScriptedEngine

from alize.chat.accounts import UserInfo, UserService
from alize.chat.documents import Embedder
from alize.config import LimitSettings, Settings
from alize.deployments.manager import DeploymentManager, QueueLimits
from alize.deployments.specs import DeploymentSpec, Prices
from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry
from alize.gateway.generation import GenerationService
from alize.gateway.limits import MemoryRateLimiter
from alize.gateway.metering import UsageRecord
from alize.gateway.pipeline import PolicyPipeline
from alize.gateway.projects import ProjectService
from alize.gateway.tenancy import Tenancy
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


@dataclass
class Gateway:
    """The pipeline the chat services call, over scripted deployments."""

    tenancy: Tenancy
    manager: DeploymentManager
    pipeline: PolicyPipeline
    embedder: Embedder


@pytest_asyncio.fixture
async def gateway(db: Database, tmp_path: Path) -> AsyncIterator[Gateway]:
    registry = EngineRegistry(load_entry_points=False)
    registry.register("scripted", ScriptedEngine)
    manager = DeploymentManager(registry, QueueLimits(max_waiting=8, timeout_s=5))
    prices = Prices(input_per_million=1_000_000)  # one micro-unit per prompt token
    for name, scenario in (("bag", "embed"), ("echo", "echo"), ("error-mid-stream", "error-mid-stream")):
        config = EngineConfig(kind="scripted", model_path=Path(scenario), parallel=2, ctx_per_slot=512)
        manager.add(DeploymentSpec(name=name, model_id=f"{name}-model", engine=config, prices=prices))
    settings = Settings(data_dir=tmp_path, secret_key="test-secret")  # type: ignore[arg-type]
    tenancy = Tenancy.build(settings, db, limiter=MemoryRateLimiter())
    pipeline = PolicyPipeline(GenerationService(LimitSettings(), "be safe"), manager, tenancy)
    try:
        yield Gateway(tenancy, manager, pipeline, Embedder(manager, pipeline, "bag"))
    finally:
        await manager.close()


async def ledger(tenancy: Tenancy, project_id: str) -> list[UsageRecord]:
    """The project's usage rows of the last hour."""
    now = datetime.now(UTC)
    return await tenancy.metering.rows(project_id, now - timedelta(hours=1), now + timedelta(hours=1))
