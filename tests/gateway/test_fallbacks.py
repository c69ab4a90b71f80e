"""Deployment fallbacks through the policy pipeline, over scripted engines and SQLite: a
deployment that is down, overloaded or too short gives way to the next of its ``fallbacks``,
under the same request id (one ledger row, billed once), and the route is told in the headers
and on the row; a client's own mistake never falls back. Embeddings fall back the same way."""

from __future__ import annotations

import asyncio
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
from alize.errors import ContextLengthExceededError, EngineError, QueueFullError
from alize.gateway.calls import ChatCall
from alize.gateway.generation import GenerationService
from alize.gateway.limits import MemoryRateLimiter
from alize.gateway.metering import UsageRecord
from alize.gateway.pipeline import PolicyPipeline
from alize.gateway.tenancy import Tenancy
from alize.store.testing import temporary_database

PRICES = Prices(input_per_million=1_000_000, output_per_million=2_000_000)
OTHER_PRICES = Prices(input_per_million=5_000_000, output_per_million=9_000_000)


@dataclass
class Rig:
    tenancy: Tenancy
    pipeline: PolicyPipeline
    manager: DeploymentManager


def _spec(
    name: str, scenario: str, *, fallbacks: tuple[str, ...] = (), ctx: int = 512, parallel: int = 8
) -> DeploymentSpec:
    config = EngineConfig(kind="scripted", model_path=Path(scenario), parallel=parallel, ctx_per_slot=ctx)
    prices = PRICES if name.startswith("a-") else OTHER_PRICES
    return DeploymentSpec(
        name=name, model_id=f"{name}-model", engine=config, prices=prices, fallbacks=fallbacks
    )


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with temporary_database("sqlite", tmp_path) as db:
        registry = EngineRegistry(load_entry_points=False)
        registry.register("scripted", ScriptedEngine)
        manager = DeploymentManager(registry, QueueLimits(max_waiting=0, timeout_s=5))
        manager.add(_spec("b-echo", "echo"))
        manager.add(_spec("a-down", "error-first", fallbacks=("gone", "a-down", "b-echo")))
        manager.add(_spec("a-short", "echo", fallbacks=("b-echo",), ctx=64))
        manager.add(_spec("a-busy", "slow", fallbacks=("b-echo",), parallel=1))
        manager.add(_spec("a-alone", "error-first"))
        manager.add(_spec("a-both-down", "error-first", fallbacks=("a-alone",)))
        manager.add(_spec("e-ok", "embed"))
        manager.add(_spec("e-down", "embed-down", fallbacks=("e-ok",)))
        manager.add(_spec("e-busy", "embed-slow", fallbacks=("e-ok",), parallel=1))
        manager.add(_spec("e-both-down", "embed-down", fallbacks=("e-down",)))
        settings = Settings(data_dir=tmp_path, secret_key="test-secret")  # type: ignore[arg-type]
        tenancy = Tenancy.build(settings, db, limiter=MemoryRateLimiter())
        pipeline = PolicyPipeline(GenerationService(LimitSettings(), "be safe"), manager, tenancy)
        try:
            yield Rig(tenancy, pipeline, manager)
        finally:
            await manager.close()


def _call(model: str, max_tokens: int = 8, text: str = "one two three four") -> ChatCall:
    return ChatCall(
        model=model,
        messages=(Message(role="user", content=text),),
        params=SamplingParams(max_tokens=max_tokens),
    )


async def _rows(rig: Rig) -> list[UsageRecord]:
    project = await rig.tenancy.default_project_id()
    now = datetime.now(UTC)
    return await rig.tenancy.metering.rows(project, now - timedelta(hours=1), now + timedelta(hours=1))


async def _text(generation: object) -> str:
    parts = [e.delta.text async for e in generation.events]  # type: ignore[attr-defined]
    await generation.aclose()  # type: ignore[attr-defined]
    return "".join(parts)


async def test_a_deployment_down_at_its_first_token_falls_back_billed_once(rig: Rig) -> None:
    generation = await rig.pipeline.chat(_call("a-down"), "c", None)
    assert await _text(generation) == "one two three four "
    assert generation.deployment == "a-down" and generation.model == "b-echo-model"
    assert generation.route.served_by == "b-echo"
    assert generation.route.headers() == {"x-alize-fallback": "a-down;reason=down;code=engine_error"}
    [row] = await _rows(rig)
    assert (row.request_id, row.deployment, row.served_by, row.status) == (
        generation.request_id,
        "a-down",
        "b-echo",
        "success",
    )
    assert row.fallback == "a-down;reason=down;code=engine_error" and row.retries == 0
    # billed once, at the prices of the deployment the client called
    assert row.cost_micros == row.prompt_tokens * 1 + row.completion_tokens * 2
    status = await rig.tenancy.budget.status(row.project_id)
    assert (status.spent_micros, status.reserved_micros) == (row.cost_micros, 0)


async def test_a_context_too_short_falls_back_to_a_longer_one(rig: Rig) -> None:
    generation = await rig.pipeline.chat(_call("a-short", max_tokens=100), "c", None)
    assert await _text(generation)
    assert generation.route.served_by == "b-echo"
    assert generation.route.fallbacks[0].reason == "context"
    assert generation.route.fallbacks[0].code == "context_length_exceeded"
    [row] = await _rows(rig)
    assert row.served_by == "b-echo" and row.fallback is not None and "reason=context" in row.fallback


async def test_a_full_queue_falls_back_to_the_next_deployment(rig: Rig) -> None:
    busy = await rig.pipeline.chat(_call("a-busy", text="w " * 8), "c1", None)
    first = asyncio.ensure_future(_text(busy))  # holds a-busy's only slot
    await asyncio.sleep(0.06)
    second = await rig.pipeline.chat(_call("a-busy"), "c2", None)
    assert await _text(second) == "one two three four "
    assert second.route.served_by == "b-echo"
    assert second.route.headers()["x-alize-fallback"] == "a-busy;reason=overloaded;code=queue_full"
    await first
    assert busy.route.served_by == "a-busy" and busy.route.headers() == {}
    rows = {r.request_id: r for r in await _rows(rig)}
    assert len(rows) == 2 and rows[second.request_id].served_by == "b-echo"
    assert rows[busy.request_id].served_by == "a-busy" and rows[busy.request_id].fallback is None


async def test_without_a_fallback_left_the_error_says_what_was_tried(rig: Rig) -> None:
    generation = await rig.pipeline.chat(_call("a-both-down"), "c", None)
    with pytest.raises(EngineError) as caught:
        await _text(generation)
    assert caught.value.headers["x-alize-fallback"] == "a-both-down;reason=down;code=engine_error"
    [row] = await _rows(rig)
    assert (row.deployment, row.served_by, row.status, row.error_code) == (
        "a-both-down",
        "a-alone",
        "error",
        "engine_error",
    )
    assert row.completion_tokens == 0 and row.cost_micros == row.prompt_tokens * 1  # once, A's price


async def test_a_client_mistake_does_not_fall_back(rig: Rig) -> None:
    # 100 tokens never fit b-echo either: the last deployment's refusal reaches the client
    with pytest.raises(ContextLengthExceededError) as caught:
        await rig.pipeline.chat(_call("a-short", max_tokens=600), "c", None)
    assert caught.value.headers["x-alize-fallback"] == "a-short;reason=context;code=context_length_exceeded"
    assert await _rows(rig) == []  # refused before admission: no row
    # with no fallback configured, a full queue is the client's 503 as before
    rig.manager.add(_spec("a-single", "slow", parallel=1))
    held = await rig.pipeline.chat(_call("a-single", text="w " * 8), "c1", None)
    draining = asyncio.ensure_future(_text(held))
    await asyncio.sleep(0.06)
    with pytest.raises(QueueFullError) as full:
        await rig.pipeline.chat(_call("a-single"), "c2", None)
    assert "x-alize-fallback" not in full.value.headers
    await draining


async def test_embeddings_fall_back_from_a_deployment_that_is_down_billed_once(rig: Rig) -> None:
    result = await rig.pipeline.embed("e-down", ["green island"], "c", None)
    assert (result.deployment, result.model) == ("e-ok", "e-ok-model")
    assert result.vectors == ((0.0, 0.0, 0.0, 0.0, 1.0, 1.0),)
    assert result.route.served_by == "e-ok"
    assert result.route.headers() == {"x-alize-fallback": "e-down;reason=down;code=engine_error"}
    [row] = await _rows(rig)
    assert (row.request_id, row.deployment, row.status, row.prompt_tokens) == (
        result.request_id,
        "e-down",
        "success",
        2,
    )
    # the row says who served it and what was left, as a generation's does
    assert (row.served_by, row.fallback) == ("e-ok", "e-down;reason=down;code=engine_error")


async def test_embeddings_fall_back_from_a_full_queue(rig: Rig) -> None:
    held = asyncio.ensure_future(rig.pipeline.embed("e-busy", ["bread"], "c1", None))
    await asyncio.sleep(0.1)  # holds e-busy's only slot for 0.3 s
    second = await rig.pipeline.embed("e-busy", ["bakery"], "c2", None)
    assert second.deployment == "e-ok"
    assert second.route.headers() == {"x-alize-fallback": "e-busy;reason=overloaded;code=queue_full"}
    first = await held
    assert first.deployment == "e-busy" and first.route.headers() == {}
    assert len(await _rows(rig)) == 2


async def test_embeddings_without_a_fallback_left_say_what_was_tried(rig: Rig) -> None:
    with pytest.raises(EngineError) as caught:
        await rig.pipeline.embed("e-both-down", ["green"], "c", None)
    assert caught.value.headers["x-alize-fallback"] == "e-both-down;reason=down;code=engine_error"
    [row] = await _rows(rig)
    assert (row.deployment, row.status, row.error_code) == ("e-both-down", "error", "engine_error")
