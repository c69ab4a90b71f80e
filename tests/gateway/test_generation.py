"""The generation service on its own (no pipeline, no database): prepare holds and settles,
start takes one slot per choice and frees them however the stream ends, usage is summed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.support.scripted_engine import ScriptedEngine

from alize.config import LimitSettings
from alize.deployments.manager import Deployment, DeploymentManager, QueueLimits
from alize.deployments.specs import DeploymentSpec
from alize.domain import Delta, FimPrompt, Message, SamplingParams, Usage
from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry
from alize.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    QueueFullError,
    UnsupportedFeatureError,
)
from alize.gateway.calls import ChatCall, TextCall
from alize.gateway.choices import ChoiceEvent
from alize.gateway.generation import Generation, GenerationService

WORDS = "one two three four five six"


@pytest_asyncio.fixture
async def manager() -> AsyncIterator[DeploymentManager]:
    registry = EngineRegistry(load_entry_points=False)
    registry.register("scripted", ScriptedEngine)
    manager = DeploymentManager(registry, QueueLimits(max_waiting=4, timeout_s=2))
    for scenario in ("echo", "embed"):
        config = EngineConfig(kind="scripted", model_path=Path(scenario), parallel=4, ctx_per_slot=64)
        manager.add(DeploymentSpec(name=scenario, model_id=f"{scenario}-model", engine=config))
    try:
        yield manager
    finally:
        await manager.close()


def _service(max_tokens: int = 4096) -> GenerationService:
    return GenerationService(LimitSettings(max_tokens=max_tokens), "Be safe.")


def _chat(text: str = WORDS, **kw: object) -> ChatCall:
    return ChatCall(model="echo", messages=(Message("user", text),), **kw)  # type: ignore[arg-type]


async def _drain(generation: Generation) -> list[ChoiceEvent]:
    events = [e async for e in generation.events]
    await generation.aclose()
    return events


async def test_prepare_holds_the_deployment_until_closed(manager: DeploymentManager) -> None:
    echo = manager.get("echo")
    prepared = await _service().prepare(echo, _chat())
    assert echo.loaded and prepared.cold_start_s is not None  # this call loaded it
    assert echo.busy  # held: the idle reaper and the memory budget leave it alone
    prepared.close()
    prepared.close()  # idempotent
    assert not echo.busy
    again = await _service().prepare(echo, _chat())
    assert again.cold_start_s is None  # already loaded
    again.close()


async def test_max_tokens_not_asked_for_is_what_the_context_leaves(manager: DeploymentManager) -> None:
    echo = manager.get("echo")
    prepared = await _service().prepare(echo, _chat())
    # the scripted engine counts the words of the JSON of the messages
    assert prepared.prompt_tokens == len(WORDS.split())
    assert prepared.max_tokens == 64 - prepared.prompt_tokens
    assert prepared.request.params.max_tokens == prepared.max_tokens
    prepared.close()
    capped = await _service(max_tokens=5).prepare(echo, _chat(max_tokens_ceiling=3))
    assert capped.max_tokens == 3 and capped.worst_case_completion_tokens == 3
    capped.close()
    two = await _service().prepare(echo, _chat(params=SamplingParams(max_tokens=7), n=2))
    assert two.max_tokens == 7 and two.worst_case_completion_tokens == 14
    two.close()


async def test_every_refusal_releases_the_hold(manager: DeploymentManager) -> None:
    echo, embed = manager.get("echo"), manager.get("embed")
    service = _service(max_tokens=100)
    with pytest.raises(ContextLengthExceededError):
        await service.prepare(echo, _chat(params=SamplingParams(max_tokens=60)))
    with pytest.raises(InvalidRequestError):  # past the server's cap
        await service.prepare(echo, _chat(params=SamplingParams(max_tokens=101)))
    with pytest.raises(UnsupportedFeatureError, match="no chat template"):
        await service.prepare(embed, ChatCall(model="embed", messages=(Message("user", "x"),)))
    with pytest.raises(UnsupportedFeatureError, match="fill-in-the-middle"):
        await service.prepare(echo, TextCall(model="echo", fim=FimPrompt("a", "b")))
    assert not echo.busy and not embed.busy


async def test_safe_prompt_goes_first(manager: DeploymentManager) -> None:
    prepared = await _service().prepare(manager.get("echo"), _chat(safe_prompt=True))
    assert prepared.request.messages[0] == Message("system", "Be safe.")
    assert prepared.request.messages[1].content == WORDS
    prepared.close()


async def test_start_takes_a_slot_per_choice_and_frees_them(manager: DeploymentManager) -> None:
    echo = manager.get("echo")
    service = _service()
    prepared = await service.prepare(echo, _chat(params=SamplingParams(max_tokens=3), n=2))
    generation = await service.start(prepared, "caller")
    assert echo.queue.busy == 2 and generation.model == "echo-model"
    events = await _drain(generation)
    assert echo.queue.busy == 0 and not echo.busy
    assert {e.index for e in events} == {0, 1}
    assert generation.usage.completion_tokens == 6  # 3 per choice, as the engine reported
    assert generation.first_token_at is not None


async def test_a_stream_closed_early_frees_its_slot_and_counts_what_came(manager: DeploymentManager) -> None:
    echo = manager.get("echo")
    service = _service()
    generation = await service.start(await service.prepare(echo, _chat()), "caller")
    first = await anext(generation.events)
    assert first.delta.text == "one "
    await generation.aclose()
    assert echo.queue.busy == 0
    assert generation.usage.completion_tokens == 1  # the one token streamed before the close


async def test_a_full_queue_releases_the_hold_and_the_slots_taken() -> None:
    registry = EngineRegistry(load_entry_points=False)
    registry.register("scripted", ScriptedEngine)
    manager = DeploymentManager(registry, QueueLimits(max_waiting=0, timeout_s=0.1))
    config = EngineConfig(kind="scripted", model_path=Path("echo"), parallel=1, ctx_per_slot=64)
    echo: Deployment = manager.add(DeploymentSpec(name="echo", model_id="m", engine=config))
    service = _service()
    try:
        prepared = await service.prepare(echo, _chat(params=SamplingParams(max_tokens=2), n=2))
        with pytest.raises(QueueFullError):
            await service.start(prepared, "caller")
        assert echo.queue.busy == 0 and not echo.busy
    finally:
        await manager.close()


def test_usage_is_exact_for_finished_choices_and_streamed_for_cut_ones() -> None:
    async def nothing() -> AsyncIterator[ChoiceEvent]:
        return
        yield  # pragma: no cover

    g = Generation("r", "d", 0, prompt_tokens=9, cold_start_s=None, events=nothing())
    g.account(ChoiceEvent(0, Delta(text="a", tokens=1)))
    g.account(ChoiceEvent(1, Delta(text="b", tokens=1)))
    g.account(ChoiceEvent(1, Delta(text="c", tokens=1)))
    assert g.usage == Usage(prompt_tokens=9, completion_tokens=3)
    g.account(ChoiceEvent(0, Delta(usage=Usage(prompt_tokens=11, completion_tokens=5, cached_tokens=4))))
    # choice 0 finished (its own count replaces what streamed), choice 1 was cut after 2
    assert g.usage == Usage(prompt_tokens=11, completion_tokens=7, cached_tokens=4)
