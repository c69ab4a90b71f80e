"""The policy pipeline over scripted engines and a real database (SQLite and PostgreSQL):
one ledger row per admitted request on every outcome, budget holds, rate limits, prices."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from tests.support.scripted_engine import ScriptedEngine

from alize.config import LimitSettings, Settings
from alize.deployments.manager import DeploymentManager, QueueLimits
from alize.deployments.specs import DeploymentSpec, Prices
from alize.domain import Message, SamplingParams
from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry
from alize.errors import EngineError, InsufficientQuotaError, PermissionDeniedError, RateLimitError
from alize.gateway.auth import Principal
from alize.gateway.calls import ChatCall
from alize.gateway.generation import GenerationService
from alize.gateway.limits import LimitSpec, MemoryRateLimiter
from alize.gateway.metering import UsageRecord
from alize.gateway.pipeline import PolicyPipeline
from alize.gateway.tenancy import Tenancy
from alize.gateway.tickets import BatchLine
from alize.store import Database
from alize.store.testing import temporary_database

PRICES = Prices(input_per_million=1_000_000, output_per_million=2_000_000)  # 1 and 2 per token
WORDS = "one two three four five six seven eight"


@dataclass
class Rig:
    db: Database
    tenancy: Tenancy
    pipeline: PolicyPipeline
    manager: DeploymentManager


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with temporary_database(request.param, tmp_path) as db:
        registry = EngineRegistry(load_entry_points=False)
        registry.register("scripted", ScriptedEngine)
        manager = DeploymentManager(registry, QueueLimits(max_waiting=200, timeout_s=30))
        for scenario in ("echo", "slow", "error-mid-stream"):
            config = EngineConfig(kind="scripted", model_path=Path(scenario), parallel=64, ctx_per_slot=512)
            manager.add(
                DeploymentSpec(name=scenario, model_id=f"{scenario}-model", engine=config, prices=PRICES)
            )
        settings = Settings(data_dir=tmp_path, secret_key="test-secret")  # type: ignore[arg-type]
        tenancy = Tenancy.build(settings, db, limiter=MemoryRateLimiter())
        generation = GenerationService(LimitSettings(), "be safe")
        try:
            yield Rig(db, tenancy, PolicyPipeline(generation, manager, tenancy), manager)
        finally:
            await manager.close()


def _call(model: str = "echo", text: str = WORDS, max_tokens: int = 16) -> ChatCall:
    return ChatCall(
        model=model,
        messages=(Message(role="user", content=text),),
        params=SamplingParams(max_tokens=max_tokens),
    )


async def _principal(
    rig: Rig, *, key_limits: LimitSpec | None = None, budget: int | None = None
) -> Principal:
    key_limits = key_limits or LimitSpec()
    project = await rig.tenancy.projects.create("tenant", monthly_budget_micros=budget)
    created = await rig.tenancy.keys.create(project.id, "k", limits=key_limits)
    return await rig.tenancy.auth.authenticate(created.plaintext)


async def _rows(rig: Rig, project_id: str) -> list[UsageRecord]:
    now = datetime.now(UTC)
    return await rig.tenancy.metering.rows(project_id, now - timedelta(hours=1), now + timedelta(hours=1))


async def _drain(generation: object) -> int:
    count = 0
    async for _ in generation.events:  # type: ignore[attr-defined]
        count += 1
    await generation.aclose()  # type: ignore[attr-defined]
    return count


async def test_success_writes_one_row_with_cost_and_settles_budget(rig: Rig) -> None:
    principal = await _principal(rig, budget=10_000)
    generation = await rig.pipeline.chat(_call(), "c", principal)
    await _drain(generation)
    await generation.aclose()  # a second close changes nothing
    [row] = await _rows(rig, principal.project_id)
    assert row.request_id == generation.request_id
    assert (row.status, row.key_id, row.deployment, row.model) == (
        "success",
        principal.key_id,
        "echo",
        "echo-model",
    )
    assert row.completion_tokens == 8 and row.prompt_tokens == generation.usage.prompt_tokens
    assert row.cost_micros == row.prompt_tokens * 1 + 8 * 2
    assert row.latency_ms is not None and row.ttft_ms is not None and row.ttft_ms <= row.latency_ms
    status = await rig.tenancy.budget.status(principal.project_id)
    assert (status.spent_micros, status.reserved_micros) == (row.cost_micros, 0)


async def test_engine_error_mid_stream_is_metered_as_error(rig: Rig) -> None:
    principal = await _principal(rig)
    generation = await rig.pipeline.chat(_call("error-mid-stream"), "c", principal)
    with pytest.raises(EngineError):
        await _drain(generation)
    await generation.aclose()
    [row] = await _rows(rig, principal.project_id)
    assert (row.status, row.error_code, row.completion_tokens) == ("error", "engine_error", 2)


@pytest.mark.parametrize("chunks", [0, 1, 5])
async def test_disconnect_counts_streamed_tokens(rig: Rig, chunks: int) -> None:
    principal = await _principal(rig)
    generation = await rig.pipeline.chat(_call("slow"), "c", principal)
    if chunks:
        for _ in range(chunks):
            await anext(generation.events)
    await generation.aclose()  # the client went away
    [row] = await _rows(rig, principal.project_id)
    assert row.status == "client_disconnected"
    assert row.completion_tokens == chunks


async def test_open_mode_meters_under_default_project(rig: Rig) -> None:
    generation = await rig.pipeline.chat(_call(), "c", None)
    await _drain(generation)
    default = await rig.tenancy.projects.get_by_name("default")
    assert default is not None
    [row] = await _rows(rig, default.id)
    assert row.key_id is None and row.status == "success"


async def test_budget_race_never_overspends(rig: Rig) -> None:
    """50 concurrent requests against a budget that covers one worst case."""
    prompt = len(json.dumps([WORDS]).split())
    worst = prompt * 1 + 16 * 2
    principal = await _principal(rig, budget=worst)

    async def one() -> str:
        try:
            generation = await rig.pipeline.chat(_call(), "c", principal)
        except InsufficientQuotaError:
            return "refused"
        await _drain(generation)
        return "ok"

    outcomes = await asyncio.gather(*(one() for _ in range(50)))
    status = await rig.tenancy.budget.status(principal.project_id)
    # the first hold takes the whole budget; what it leaves after settling covers no worst case
    assert outcomes.count("ok") == 1 and outcomes.count("refused") == 49
    [row] = await _rows(rig, principal.project_id)
    assert status.spent_micros == row.cost_micros <= worst
    assert status.reserved_micros == 0


async def test_rate_limit_refuses_before_generation_without_a_row(rig: Rig) -> None:
    principal = await _principal(rig, key_limits=LimitSpec(rpm=2))
    for _ in range(2):
        generation = await rig.pipeline.chat(_call(), "c", principal)
        assert generation.headers["x-ratelimit-limit-requests"] == "2"
        await _drain(generation)
    with pytest.raises(RateLimitError) as refused:
        await rig.pipeline.chat(_call(), "c", principal)
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert "retry-after-ms" in refused.value.headers
    assert len(await _rows(rig, principal.project_id)) == 2


async def test_allow_list_is_enforced(rig: Rig) -> None:
    project = await rig.tenancy.projects.create("narrow")
    created = await rig.tenancy.keys.create(project.id, "k", allowed_deployments=["slow"])
    principal = await rig.tenancy.auth.authenticate(created.plaintext)
    with pytest.raises(PermissionDeniedError):
        await rig.pipeline.chat(_call("echo"), "c", principal)
    assert await _rows(rig, project.id) == []


async def test_a_batch_line_pays_the_batch_price_under_its_own_request_id(rig: Rig) -> None:
    principal = await _principal(rig, budget=10_000)
    generation = await rig.pipeline.chat(_call(), "c", principal, line=BatchLine("batch_x-0"))
    await _drain(generation)
    [row] = await _rows(rig, principal.project_id)
    assert row.request_id == "batch_x-0"
    # half of 1 and 2 per token
    assert row.cost_micros == -(-(row.prompt_tokens * 500_000 + 8 * 1_000_000) // 1_000_000)


async def test_a_request_id_seen_twice_is_billed_once(rig: Rig) -> None:
    """A batch line run again (its worker died between the usage row and the line's result) keeps
    its first row and is not charged a second time."""
    principal = await _principal(rig, budget=10_000)
    for _ in range(2):
        await _drain(await rig.pipeline.chat(_call(), "c", principal, line=BatchLine("batch_y-3")))
    [row] = await _rows(rig, principal.project_id)
    status = await rig.tenancy.budget.status(principal.project_id)
    assert (status.spent_micros, status.reserved_micros) == (row.cost_micros, 0)
