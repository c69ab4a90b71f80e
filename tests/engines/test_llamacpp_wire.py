"""Folding llama.cpp's stream into Alizé deltas."""

from __future__ import annotations

from alize.domain import FinishReason, GenerationRequest, Message, SamplingParams, ToolSpec
from alize.engines.llamacpp.wire import chat_body, completion_body
from alize.engines.openai_wire import ChunkDecoder


def test_content_then_finish_then_usage() -> None:
    d = ChunkDecoder()
    assert d.decode({"choices": [{"delta": {"role": "assistant", "content": None}}]}) is None
    delta = d.decode({"choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]})
    assert delta is not None and delta.text == "Hi" and delta.tokens == 1
    assert d.decode({"choices": [{"delta": {}, "finish_reason": "length"}]}) is None
    last = d.decode(
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
        }
    )
    assert last is not None and last.finish_reason is FinishReason.LENGTH
    assert last.usage is not None and (last.usage.prompt_tokens, last.usage.cached_tokens) == (5, 4)


def test_native_tool_call_fragments_are_joined() -> None:
    d = ChunkDecoder()
    d.decode(
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "function": {"name": "get", "arguments": '{"a"'}}
                        ]
                    }
                }
            ]
        }
    )
    d.decode(
        {
            "choices": [
                {
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    last = d.decode({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 3}})
    assert last is not None and last.tool_calls[0].arguments == '{"a": 1}'
    assert last.finish_reason is FinishReason.TOOL_CALLS


def test_logprobs_count_tokens() -> None:
    d = ChunkDecoder()
    chunk = {
        "choices": [
            {
                "delta": {"content": "ab"},
                "logprobs": {
                    "content": [
                        {"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1}]},
                        {"token": "b", "logprob": -0.2, "top_logprobs": []},
                    ]
                },
            }
        ]
    }
    delta = d.decode(chunk)
    assert delta is not None and delta.tokens == 2 and delta.logprobs[0].top_logprobs[0].token == "a"


def test_request_bodies() -> None:
    params = SamplingParams(
        max_tokens=7, temperature=0.5, stop=("x",), seed=3, json_schema={"type": "object"}
    )
    req = GenerationRequest(
        "r", params, messages=(Message("user", "hi"),), tools=(ToolSpec("f"),), tool_choice="auto"
    )
    body = chat_body(req)
    assert body["max_tokens"] == 7 and body["seed"] == 3 and body["stop"] == ["x"]
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert body["tools"][0]["function"]["name"] == "f" and body["stream"] is True
    comp = completion_body(GenerationRequest("r", params, prompt="p"), [1, "p", 2])
    assert comp["prompt"] == [1, "p", 2] and comp["json_schema"] == {"type": "object"}
