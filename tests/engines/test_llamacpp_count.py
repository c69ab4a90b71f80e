"""The llama.cpp engine's prompt count, taken before generation in one call to its worker, is the
prompt the worker then generates from: the count the budget holds and the context check use is
the one the engine reports in its usage, for chats (with tools or a schema too), text and FIM."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

from alize.domain import FimPrompt, GenerationRequest, Message, SamplingParams, ToolSpec
from alize.engines.base import EngineConfig
from alize.engines.llamacpp.engine import LlamaCppEngine

WEATHER = ToolSpec(
    name="get_weather",
    description="The weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
ONE = SamplingParams(max_tokens=1, temperature=0.0)
CHAT = (
    Message(role="system", content="You answer briefly."),
    Message(role="user", content="What is the weather like in Lyon today?"),
)
REQUESTS = {
    "chat": GenerationRequest("r1", ONE, messages=CHAT),
    "chat with tools": GenerationRequest("r2", ONE, messages=CHAT, tools=(WEATHER,), tool_choice="auto"),
    "chat with a schema": GenerationRequest(
        "r3", SamplingParams(max_tokens=1, json_schema={"type": "object"}), messages=CHAT
    ),
    "text": GenerationRequest("r4", ONE, prompt="Once upon a time, in a small town by the sea,"),
    "fim": GenerationRequest("r5", ONE, fim=FimPrompt(prefix="def add(a, b):\n    ", suffix="\n")),
}


async def test_the_count_is_the_prompt_the_worker_generates_from(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    path = write_tiny_llama_gguf(tmp_path / "t.gguf", with_fim=True)
    engine = LlamaCppEngine(
        EngineConfig(kind="llamacpp", model_path=path, parallel=1, ctx_per_slot=256, threads=1)
    )
    await engine.start()
    try:
        seen = {}
        for name, request in REQUESTS.items():
            counted = await engine.count_prompt_tokens(request)
            reported = [d.usage async for d in engine.generate(request) if d.usage is not None]
            seen[name] = (counted, reported[-1].prompt_tokens if reported else None)
    finally:
        await engine.stop()
    assert all(counted == reported and counted > 0 for counted, reported in seen.values()), seen
