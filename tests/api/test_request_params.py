"""OpenAI request fields that change what is generated or returned, each checked for its effect:
the ``developer`` role, ``max_completion_tokens``, the default ``max_tokens``, penalties, ``user``,
the ``x-alize-deployment`` header and the tool cap."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.support.apps import scripted_client

from alize.api.translate import COMPLETIONS_DEFAULT_MAX_TOKENS, chat_call, text_call
from alize.protocol.openai.chat import ChatCompletionRequest
from alize.protocol.openai.completions import CompletionRequest

WORDS = " ".join(f"w{i}" for i in range(40))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with scripted_client(tmp_path_factory.mktemp("params")) as c:
        yield c


def _chat(**fields: object) -> ChatCompletionRequest:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


def test_developer_messages_are_system_messages() -> None:
    call = chat_call(
        _chat(messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    )
    assert [(m.role, m.content) for m in call.messages] == [("system", "Be brief."), ("user", "hi")]


def test_max_completion_tokens_wins_over_max_tokens_and_penalties_pass_through() -> None:
    call = chat_call(
        _chat(max_tokens=30, max_completion_tokens=5, presence_penalty=0.5, frequency_penalty=-0.25)
    )
    assert call.params.max_tokens == 5
    assert (call.params.presence_penalty, call.params.frequency_penalty) == (0.5, -0.25)
    assert chat_call(_chat()).params.max_tokens is None  # chat: until the model stops (or the context ends)


def test_completions_default_to_16_tokens_like_openai(client: TestClient) -> None:
    assert COMPLETIONS_DEFAULT_MAX_TOKENS == 16
    assert (
        text_call(CompletionRequest.model_validate({"model": "echo", "prompt": "a"})).params.max_tokens == 16
    )
    r = client.post("/v1/completions", json={"model": "echo", "prompt": WORDS})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 16
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_max_completion_tokens_over_http(client: TestClient) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": WORDS}], "max_completion_tokens": 3}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "w0 w1 w2 "
    assert r.json()["usage"]["completion_tokens"] == 3


def test_user_is_accepted_and_the_deployment_is_named_in_a_header(client: TestClient) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "a b"}], "user": "end-user-42"}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert (r.headers["x-alize-deployment"], r.headers["x-alize-model"]) == ("echo", "echo")
    too_long = client.post("/v1/chat/completions", json={**body, "user": "u" * 257})
    assert too_long.status_code == 422


def test_at_most_64_tools(client: TestClient) -> None:
    def tools(n: int) -> list[dict[str, object]]:
        return [
            {"type": "function", "function": {"name": f"f{i}", "parameters": {"type": "object"}}}
            for i in range(n)
        ]

    # tool_choice none: the tools are not put in the prompt (64 would overflow the tiny context)
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "a"}],
        "max_tokens": 1,
        "tool_choice": "none",
    }
    assert client.post("/v1/chat/completions", json={**body, "tools": tools(64)}).status_code == 200
    refused = client.post("/v1/chat/completions", json={**body, "tools": tools(65)})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "tools" and "64" in refused.json()["error"]["message"]


def test_mistral_tool_choice_any_is_required_and_random_seed_is_the_seed() -> None:
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    assert chat_call(_chat(tools=tools, tool_choice="any")).tool_choice == "required"
    assert chat_call(_chat(tools=tools, tool_choice="auto")).tool_choice == "auto"
    assert chat_call(_chat(random_seed=7)).params.seed == 7
    assert chat_call(_chat(random_seed=7, seed=8)).params.seed == 8  # OpenAI's name wins when both are sent
