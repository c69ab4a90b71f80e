"""One OpenAI body builder for every upstream: the llama.cpp worker and remote engines send the
same public fields, and differ only in what each adds (the model name, llama.cpp's extras)."""

from __future__ import annotations

from alize.domain import FimPrompt, GenerationRequest, Message, SamplingParams, ToolSpec
from alize.engines import openai_wire, remote_wire
from alize.engines.llamacpp import wire as llamacpp_wire

SCHEMA = {"type": "object"}
PARAMS = SamplingParams(
    max_tokens=9, temperature=0.3, top_p=0.8, stop=("END",), seed=5, json_schema=SCHEMA, logprobs=True
)
CHAT = GenerationRequest(
    "r", PARAMS, messages=(Message("user", "hi"),), tools=(ToolSpec("f"),), tool_choice="required"
)
PUBLIC_CHAT = {
    "temperature": 0.3,
    "top_p": 0.8,
    "stream": True,
    "stream_options": {"include_usage": True},
    "max_tokens": 9,
    "stop": ["END"],
    "seed": 5,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": SCHEMA, "strict": True},
    },
    "messages": [{"role": "user", "content": "hi"}],
    "logprobs": True,
    "top_logprobs": 0,
    "tools": [
        {
            "type": "function",
            "function": {"name": "f", "description": "", "parameters": {"type": "object", "properties": {}}},
        }
    ],
    "tool_choice": "required",
}


def test_chat_body_is_the_public_api_only() -> None:
    assert openai_wire.chat_body(CHAT) == PUBLIC_CHAT


def test_remote_names_its_model_and_adds_nothing() -> None:
    assert remote_wire.chat_body(CHAT, "up") == {"model": "up", **PUBLIC_CHAT}


def test_llamacpp_adds_its_extras_on_top() -> None:
    assert llamacpp_wire.chat_body(CHAT) == {**PUBLIC_CHAT, "cache_prompt": True, "parse_tool_calls": True}


def test_penalties_only_when_set() -> None:
    plain = GenerationRequest("r", SamplingParams(), messages=(Message("user", "x"),))
    assert "presence_penalty" not in openai_wire.chat_body(plain)
    tuned = GenerationRequest("r", SamplingParams(presence_penalty=0.5), messages=plain.messages)
    assert openai_wire.chat_body(tuned)["presence_penalty"] == 0.5


def test_completion_bodies_share_the_base() -> None:
    req = GenerationRequest("r", PARAMS, prompt="p")
    public = openai_wire.completion_body(req, "p")
    assert public["prompt"] == "p" and public["logprobs"] == 1 and "messages" not in public
    assert remote_wire.completion_body(req, "up") == {"model": "up", **public}
    llama = llamacpp_wire.completion_body(req, [1, "p", 2])
    # llama.cpp's completions read json_schema, not response_format
    assert llama["json_schema"] == SCHEMA and "response_format" not in llama
    assert llama["prompt"] == [1, "p", 2] and llama["cache_prompt"] is True


def test_remote_fim_uses_the_suffix_field() -> None:
    req = GenerationRequest("r", SamplingParams(), fim=FimPrompt("def f(", "\n"))
    body = remote_wire.completion_body(req, "up")
    assert (body["prompt"], body["suffix"], body["model"]) == ("def f(", "\n", "up")


def test_ignore_eos_only_when_asked() -> None:
    """A strict upstream refuses fields it does not know: ``ignore_eos`` is sent only when set."""
    plain = GenerationRequest("r", SamplingParams(), messages=(Message("user", "x"),))
    assert "ignore_eos" not in remote_wire.chat_body(plain, "up")
    asked = GenerationRequest("r", SamplingParams(max_tokens=8, ignore_eos=True), messages=plain.messages)
    assert llamacpp_wire.chat_body(asked)["ignore_eos"] is True
    assert remote_wire.completion_body(asked, "up")["ignore_eos"] is True
