"""Admission on a prompt bound (alize.gateway.prompt_count), over the scripted engine's
``bounded`` scenarios (the bound is the exact count plus BOUND_SLACK) and a real SQLite ledger:
no call to count a prompt where the bound decides as the count would, and every decision,
refusal and bill the same as with the count."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from tests.support.scripted_engine import BOUND_SLACK, ScriptedEngine

from alize.config import LimitSettings, Settings
from alize.deployments.manager import DeploymentManager, QueueLimits
from alize.deployments.specs import DeploymentSpec, Prices
from alize.domain import Message, SamplingParams
from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry
from alize.errors import InsufficientQuotaError, RateLimitError
from alize.gateway.auth import Principal
from alize.gateway.calls import ChatCall
from alize.gateway.generation import GenerationService
from alize.gateway.limits import LimitSpec, MemoryRateLimiter
from alize.gateway.metering import UsageRecord
from alize.gateway.pipeline import PolicyPipeline
from alize.gateway.tenancy import Tenancy
from alize.store.testing import temporary_database

PRICES = Prices(input_per_million=1_000_000, output_per_million=2_000_000)  # 1 and 2 per token
WORDS = "one two three four five six seven eight"
EXACT = len(json.dumps([WORDS]).split())  # the scripted engine's count for WORDS
CONTEXT = 512


@dataclass
class Rig:
    tenancy: Tenancy
    pipeline: PolicyPipeline
    manager: DeploymentManager

    def engine(self, name: str) -> ScriptedEngine:
        engine = self.manager.get(name).engine
        replica = getattr(engine, "replicas", (engine,))[0]
        assert isinstance(replica, ScriptedEngine)
        return replica


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with temporary_database("sqlite", tmp_path) as db:
        registry = EngineRegistry(load_entry_points=False)
        registry.register("scripted", ScriptedEngine)
        manager = DeploymentManager(registry, QueueLimits(max_waiting=50, timeout_s=30))
        for scenario in ("bounded", "bounded-slow", "echo"):
            config = EngineConfig(
                kind="scripted", model_path=Path(scenario), parallel=8, ctx_per_slot=CONTEXT
            )
            manager.add(DeploymentSpec(name=scenario, model_id=scenario, engine=config, prices=PRICES))
        settings = Settings(data_dir=tmp_path, secret_key="test-secret")  # type: ignore[arg-type]
        tenancy = Tenancy.build(settings, db, limiter=MemoryRateLimiter())
        pipeline = PolicyPipeline(GenerationService(LimitSettings(), "be safe"), manager, tenancy)
        try:
            yield Rig(tenancy, pipeline, manager)
        finally:
            await manager.close()


def _call(model: str = "bounded", max_tokens: int | None = 16) -> ChatCall:
    return ChatCall(
        model=model,
        messages=(Message(role="user", content=WORDS),),
        params=SamplingParams(max_tokens=max_tokens),
    )


async def _principal(rig: Rig, *, limits: LimitSpec | None = None, budget: int | None = None) -> Principal:
    project = await rig.tenancy.projects.create("tenant", monthly_budget_micros=budget)
    created = await rig.tenancy.keys.create(project.id, "k", limits=limits or LimitSpec())
    return await rig.tenancy.auth.authenticate(created.plaintext)


async def _rows(rig: Rig, project_id: str) -> list[UsageRecord]:
    now = datetime.now(UTC)
    return await rig.tenancy.metering.rows(project_id, now - timedelta(hours=1), now + timedelta(hours=1))


async def _run(rig: Rig, call: ChatCall, principal: Principal) -> None:
    generation = await rig.pipeline.chat(call, "c", principal)
    async for _ in generation.events:
        pass
    await generation.aclose()


async def test_the_count_runs_beside_the_engine_start_and_holds_exactly(rig: Rig) -> None:
    """Far from every edge: no call to the worker before the request starts; the count runs
    while the engine starts, and no event reaches the client before the hold on it is placed."""
    principal = await _principal(rig, budget=1_000_000, limits=LimitSpec(tpm=10_000))
    generation = await rig.pipeline.chat(_call(), "c", principal)
    engine = rig.engine("bounded")
    assert engine.generated_at is not None and engine.counted_at is not None
    assert engine.generated_at < engine.counted_at  # the engine started before the count came back
    first = await anext(generation.events)
    assert first.delta.text and time.perf_counter() >= engine.counted_at
    async for _ in generation.events:
        pass
    await generation.aclose()
    assert engine.counts == 1
    [row] = await _rows(rig, principal.project_id)
    assert (row.prompt_tokens, row.completion_tokens) == (EXACT, 8)
    status = await rig.tenancy.budget.status(principal.project_id)
    assert (status.spent_micros, status.reserved_micros) == (EXACT + 8 * 2, 0)


async def test_the_token_limit_holds_the_count_once_it_is_known(rig: Rig) -> None:
    """Requests in flight hold their counted prompts in the token window: the remaining tokens
    a response reports say so."""
    tpm = 10_000
    principal = await _principal(rig, limits=LimitSpec(tpm=tpm))
    first = await rig.pipeline.chat(_call("bounded-slow"), "c", principal)
    await anext(first.events)  # admitted, counted, streaming
    second = await rig.pipeline.chat(_call("bounded-slow"), "c", principal)
    # both hold their counted prompts (the second checked on its completion alone, then grown)
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == tpm - 2 * (EXACT + 16)
    for generation in (first, second):
        await generation.aclose()


async def test_an_engine_without_a_bound_is_counted_as_before(rig: Rig) -> None:
    principal = await _principal(rig)
    await _run(rig, _call("echo"), principal)
    assert rig.engine("echo").counts >= 1


async def test_a_budget_the_bound_exceeds_but_the_count_fits_admits(rig: Rig) -> None:
    """The budget covers the exact worst case and not the bound's: the hold is on the count."""
    principal = await _principal(rig, budget=EXACT + 16 * 2)
    await _run(rig, _call(), principal)
    assert rig.engine("bounded").counts == 1  # one count, the hold's
    [row] = await _rows(rig, principal.project_id)
    assert row.status == "success" and row.prompt_tokens == EXACT


async def test_a_budget_the_count_exceeds_still_refuses(rig: Rig) -> None:
    principal = await _principal(rig, budget=EXACT + 16 * 2 - 1)
    with pytest.raises(InsufficientQuotaError):
        await _run(rig, _call(), principal)
    assert await _rows(rig, principal.project_id) == []
    status = await rig.tenancy.budget.status(principal.project_id)
    assert status.reserved_micros == 0


async def test_a_token_limit_the_bound_exceeds_but_the_count_fits_admits(rig: Rig) -> None:
    principal = await _principal(rig, limits=LimitSpec(tpm=EXACT + 16))
    await _run(rig, _call(), principal)
    assert rig.engine("bounded").counts == 1
    with pytest.raises(RateLimitError):  # the minute's tokens are spent: the next is refused
        await _run(rig, _call(), principal)


async def test_a_request_limit_refusal_asks_the_worker_nothing(rig: Rig) -> None:
    """Refused on requests per minute, a smaller count cannot help: no count is spent on it
    (a client hammering a limit must cost the gateway no call to the worker)."""
    principal = await _principal(rig, limits=LimitSpec(rpm=1))
    await _run(rig, _call(), principal)
    for _ in range(3):
        with pytest.raises(RateLimitError):
            await _run(rig, _call(), principal)
    assert rig.engine("bounded").counts == 1  # the admitted request's, none for the refused


async def test_a_length_the_bound_cannot_settle_is_counted(rig: Rig) -> None:
    """Asked for exactly what the context leaves beside the real prompt: the bound would say it
    does not fit, so the prompt is counted, and the reply gets its full length."""
    principal = await _principal(rig)
    generation = await rig.pipeline.chat(_call(max_tokens=CONTEXT - EXACT), "c", principal)
    async for _ in generation.events:
        pass
    await generation.aclose()
    assert rig.engine("bounded").counts == 1
    [row] = await _rows(rig, principal.project_id)
    assert row.status == "success"


async def test_the_default_length_beside_a_long_bound_is_the_counts(rig: Rig) -> None:
    """Not asked for a length, where the context beside the bound is under the server's cap:
    counted, so the reply may use all the context the real prompt leaves."""
    principal = await _principal(rig)
    assert LimitSettings().max_tokens > CONTEXT - EXACT - BOUND_SLACK  # the bound cannot settle it
    await _run(rig, _call(max_tokens=None), principal)
    assert rig.engine("bounded").counts == 1


async def test_a_client_gone_mid_stream_is_billed_the_exact_prompt(rig: Rig) -> None:
    """The engine reports the prompt's size only at the end of a stream: a stream cut before it
    is counted when it is settled, not billed on the bound."""
    principal = await _principal(rig)
    generation = await rig.pipeline.chat(_call("bounded-slow"), "c", principal)
    await anext(generation.events)
    await generation.aclose()  # the client went away
    [row] = await _rows(rig, principal.project_id)
    assert (row.status, row.prompt_tokens) == ("client_disconnected", EXACT)
    assert rig.engine("bounded-slow").counts == 1
