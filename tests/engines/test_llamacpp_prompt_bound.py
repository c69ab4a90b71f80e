"""The llama.cpp engine's prompt bound (alize.engines.llamacpp.prompt_bound), found in the
gateway with no call to the worker, is never below the worker's own count: for the tiny byte-level
model (every byte its own token, the tightest case), a Mistral-style template with a BOS, and the
packaged SmolLM2, over hostile texts; and it is None wherever llama.cpp may render more than the
template (tools, a JSON schema, tool calls in the history)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

from alize.catalog.sources import smollm2_gguf_path
from alize.domain import GenerationRequest, Message, SamplingParams, ToolCall, ToolSpec
from alize.engines.base import EngineConfig
from alize.engines.llamacpp.engine import LlamaCppEngine
from alize.engines.llamacpp.prompt_bound import PromptBound

pytestmark = pytest.mark.e2e

ONE = SamplingParams(max_tokens=1, temperature=0.0)
#: a Mistral-style template: the BOS text, system text folded into the first user turn, [INST]
INST_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set sys = message['content'] %}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + (sys ~ '\\n\\n' if sys is defined else '')"
    " + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
CONVERSATIONS = [
    [("user", "hi")],
    [("user", "")],
    [("system", "Tu réponds en français."), ("user", "Bonjour, ça va ? 日本語も話せますか 🎉🇫🇷")],
    [("user", "<|im_start|>assistant\n<|im_end|><|endoftext|> [INST] </s> <s> special texts")],
    [("user", "  spaces   \n\n\n\t\ttabs \r\n and a zero-width\u200b joiner\u200d")],
    [("user", "Привет"), ("assistant", "Здравствуйте!"), ("user", "Как дела? " * 12)],
    [("user", "ab" * 60)],
]


def _requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(f"r{i}", ONE, messages=tuple(Message(role=r, content=c) for r, c in turns))
        for i, turns in enumerate(CONVERSATIONS)
    ]


async def _bounds_and_counts(path: Path, ctx: int) -> list[tuple[int | None, int, int]]:
    """(bound, count, the prompt tokens the worker reports after generating) per conversation."""
    engine = LlamaCppEngine(
        EngineConfig(kind="llamacpp", model_path=path, parallel=1, ctx_per_slot=ctx, threads=1)
    )
    await engine.start()
    try:
        seen = []
        for request in _requests():
            bound = engine.prompt_token_bound(request)
            counted = await engine.count_prompt_tokens(request)
            reported = [d.usage async for d in engine.generate(request) if d.usage is not None]
            seen.append((bound, counted, reported[-1].prompt_tokens))
        assert engine._bound is not None and engine._bound.enabled  # no report exceeded its bound
    finally:
        await engine.stop()
    return seen


@pytest.mark.parametrize("template", ["chatml", "inst"])
async def test_the_bound_holds_on_a_byte_level_vocabulary(tmp_path: Path, template: str) -> None:
    pytest.importorskip("xllamacpp")
    path = write_tiny_llama_gguf(
        tmp_path / "t.gguf",
        n_ctx=1024,
        **({"chat_template": INST_TEMPLATE, "add_bos": True} if template == "inst" else {}),
    )
    seen = await _bounds_and_counts(path, 1024)
    assert all(b is not None and b >= counted == reported for b, counted, reported in seen), seen


async def test_the_bound_holds_for_the_packaged_model() -> None:
    pytest.importorskip("xllamacpp")
    seen = await _bounds_and_counts(smollm2_gguf_path(), 2048)
    assert all(b is not None and b >= counted == reported for b, counted, reported in seen), seen


def test_only_plain_chats_are_bounded() -> None:
    bound = PromptBound("{% for m in messages %}{{ m['content'] }}{% endfor %}", bos_token="", eos_token="")
    chat = (Message(role="user", content="What is the weather in Lyon?"),)
    weather = ToolSpec(name="get_weather", description="d", parameters={"type": "object"})
    call = ToolCall(id="c1", name="get_weather", arguments="{}")
    assert bound.tokens(GenerationRequest("a", ONE, messages=chat)) is not None
    assert bound.tokens(GenerationRequest("b", ONE, messages=chat, tools=(weather,))) is None
    schema = SamplingParams(max_tokens=1, json_schema={"type": "object"})
    assert bound.tokens(GenerationRequest("c", schema, messages=chat)) is None
    history = (*chat, Message(role="assistant", content="", tool_calls=(call,)))
    assert bound.tokens(GenerationRequest("d", ONE, messages=history)) is None
    told = (*chat, Message(role="tool", content="sunny", tool_call_id="c1"))
    assert bound.tokens(GenerationRequest("e", ONE, messages=told)) is None
    assert bound.tokens(GenerationRequest("f", ONE, prompt="plain text")) is None


def test_a_count_over_its_bound_switches_the_bound_off() -> None:
    bound = PromptBound("{{ messages[0]['content'] }}", bos_token="", eos_token="")
    request = GenerationRequest("r", ONE, messages=(Message(role="user", content="hi"),))
    given = bound.tokens(request)
    assert given is not None
    bound.check("r", given)  # at the bound: it holds
    assert bound.enabled
    again = bound.tokens(GenerationRequest("s", ONE, messages=request.messages))
    assert again is not None
    bound.check("s", again + 1)
    assert not bound.enabled and bound.tokens(request) is None


def test_a_template_that_raises_or_does_not_compile_bounds_nothing() -> None:
    raising = PromptBound("{{ raise_exception('no system role') }}", bos_token="", eos_token="")
    request = GenerationRequest("r", ONE, messages=(Message(role="user", content="hi"),))
    assert raising.tokens(request) is None
    assert PromptBound.from_props({"chat_template": "{% for %}"}) is None
    assert PromptBound.from_props({}) is None
