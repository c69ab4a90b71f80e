"""Wire requests (OpenAI / Mistral shapes) turned into the gateway's calls: roles, content parts,
tool turns, tool choice, response formats, sampling defaults, and what is refused rather than
silently ignored."""

from __future__ import annotations

from typing import Any

import pytest

from alize.api.translate import COMPLETIONS_DEFAULT_MAX_TOKENS, chat_call, fim_call, text_call
from alize.domain import FimPrompt, Message, ToolCall
from alize.errors import InvalidRequestError, UnsupportedFeatureError
from alize.protocol.openai.chat import ChatCompletionRequest
from alize.protocol.openai.completions import CompletionRequest, FimRequest

USER = {"role": "user", "content": "hi"}


def _chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [USER], **fields})


def test_defaults_leave_max_tokens_unset_and_sampling_at_the_apis_defaults() -> None:
    call = chat_call(_chat())
    p = call.params
    assert p.max_tokens is None  # the gateway settles it against the context
    assert (p.temperature, p.top_p, p.stop, p.seed, p.json_schema) == (1.0, 1.0, (), None, None)
    assert (call.n, call.tools, call.tool_choice, call.safe_prompt) == (1, (), None, False)


def test_roles_and_content_parts() -> None:
    call = chat_call(
        _chat(
            messages=[
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ]
        )
    )
    assert call.messages == (Message("system", "be brief"), Message("user", "ab"))
    image = {"type": "image_url", "image_url": {"url": "data:x"}}
    with pytest.raises(UnsupportedFeatureError) as err:
        chat_call(_chat(messages=[{"role": "user", "content": [image]}]))
    assert err.value.param == "messages.0.content"


def test_tool_messages_must_answer_an_assistants_tool_calls() -> None:
    with pytest.raises(InvalidRequestError) as err:
        chat_call(_chat(messages=[USER, {"role": "tool", "content": "42", "tool_call_id": "c"}]))
    assert (err.value.code, err.value.param) == ("invalid_tool_message", "messages.1.role")
    asked = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}],
    }
    answers = [{"role": "tool", "content": "1", "tool_call_id": "c1"}] * 2
    call = chat_call(_chat(messages=[USER, asked, *answers]))
    assert call.messages[1].tool_calls == (ToolCall(id="c1", name="f", arguments='{"x": 1}'),)
    assert call.messages[2].tool_call_id == "c1"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", "auto"), ("any", "required"), ({"type": "function", "function": {"name": "f"}}, "f")],
)
def test_tool_choice(choice: Any, expected: str) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    call = chat_call(_chat(tools=tools, tool_choice=choice))
    assert call.tool_choice == expected
    assert call.tools[0].parameters == {"type": "object", "properties": {}}


def test_response_formats() -> None:
    assert chat_call(_chat(response_format={"type": "text"})).params.json_schema is None
    assert chat_call(_chat(response_format={"type": "json_object"})).params.json_schema == {"type": "object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert chat_call(_chat(response_format=fmt)).params.json_schema == schema
    with pytest.raises(InvalidRequestError, match=r"needs json_schema\.schema"):
        chat_call(_chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}))


def test_lengths_seeds_and_logprobs() -> None:
    p = chat_call(_chat(max_tokens=9, max_completion_tokens=5, random_seed=3, stop="END")).params
    assert (p.max_tokens, p.seed, p.stop) == (5, 3, ("END",))
    assert chat_call(_chat(seed=1, random_seed=3)).params.seed == 1
    p = chat_call(_chat(logprobs=True, top_logprobs=2)).params
    assert (p.logprobs, p.top_logprobs) == (True, 2)
    with pytest.raises(InvalidRequestError, match="top_logprobs needs logprobs"):
        chat_call(_chat(top_logprobs=2))


def test_logit_bias_is_refused_not_ignored() -> None:
    with pytest.raises(UnsupportedFeatureError) as err:
        chat_call(_chat(logit_bias={"50256": -100}))
    assert err.value.param == "logit_bias"
    with pytest.raises(UnsupportedFeatureError):
        text_call(CompletionRequest.model_validate({"model": "m", "prompt": "x", "logit_bias": {"1": 5}}))


def test_text_calls() -> None:
    call = text_call(CompletionRequest.model_validate({"model": "m", "prompt": ["one"]}))
    assert call.prompt == "one" and call.fim is None
    assert call.params.max_tokens == COMPLETIONS_DEFAULT_MAX_TOKENS == 16  # OpenAI's default
    with pytest.raises(UnsupportedFeatureError, match="one prompt"):
        text_call(CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"]}))
    fim = text_call(CompletionRequest.model_validate({"model": "m", "prompt": "def f(", "suffix": "\n"}))
    assert fim.prompt is None and fim.fim == FimPrompt("def f(", "\n")
    lp = text_call(CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": 3})).params
    assert (lp.logprobs, lp.top_logprobs) == (True, 3)


def test_mistral_fim_call() -> None:
    call = fim_call(FimRequest.model_validate({"model": "m", "prompt": "def f(", "random_seed": 4}))
    assert call.fim == FimPrompt("def f(", "") and call.params.seed == 4
    assert call.params.max_tokens is None
