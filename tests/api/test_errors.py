"""One test per error class: status code, and the OpenAI error shape on every one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.support.apps import scripted_client

from alize.config import LimitSettings

LIMITS = LimitSettings(
    max_body_bytes=4096, max_messages=4, max_n=2, max_tokens=32, max_stop=2, max_stop_length=8, queue_max=0
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with scripted_client(tmp_path, limits=LIMITS) as c:
        yield c


def chat(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]}
    body.update(overrides)
    return body


def assert_error(response: object, status: int, code: str | None, error_type: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


def test_success_shape(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=chat(max_tokens=5))
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "hello there "
    assert body["usage"]["completion_tokens"] == 2
    assert r.headers["x-request-id"].startswith("req_")


def test_unknown_model_is_404(client: TestClient) -> None:
    error = assert_error(
        client.post("/v1/chat/completions", json=chat(model="nope")),
        404,
        "model_not_found",
        "not_found_error",
    )
    assert error["param"] == "model"
    assert_error(client.get("/v1/models/nope"), 404, "model_not_found", "not_found_error")


def test_unknown_route_is_404(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "route_not_found", "not_found_error")


def test_invalid_json_is_400(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(r, 400, "invalid_json", "invalid_request_error")


def test_schema_violation_is_422_with_param(client: TestClient) -> None:
    error = assert_error(
        client.post("/v1/chat/completions", json=chat(temperature=7)),
        422,
        "validation_error",
        "invalid_request_error",
    )
    assert error["param"] == "temperature"
    assert_error(
        client.post("/v1/chat/completions", json=chat(messages=[])),
        422,
        "validation_error",
        "invalid_request_error",
    )


def test_body_over_limit_is_413(client: TestClient) -> None:
    big = chat(messages=[{"role": "user", "content": "x" * 5000}])
    assert_error(
        client.post("/v1/chat/completions", json=big), 413, "payload_too_large", "invalid_request_error"
    )


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        payload = json.dumps(chat(messages=[{"role": "user", "content": "y" * 5000}])).encode()
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    r = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large", "invalid_request_error")


def test_context_length_exceeded_names_the_numbers(client: TestClient) -> None:
    words = " ".join(["word"] * 250)
    r = client.post(
        "/v1/chat/completions", json=chat(messages=[{"role": "user", "content": words}], max_tokens=20)
    )
    error = assert_error(r, 400, "context_length_exceeded", "invalid_request_error")
    assert error["context_length"] == 256
    assert error["max_tokens"] == 20
    assert "256" in str(error["message"])


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"n": 3}, "n"),
        ({"max_tokens": 33}, "max_tokens"),
        ({"stop": ["a", "b", "c"]}, "stop"),
        ({"stop": ["much-too-long"]}, "stop"),
        ({"messages": [{"role": "user", "content": "hi"}] * 5}, "messages"),
        ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
        (
            {
                "tool_choice": {"type": "function", "function": {"name": "missing"}},
                "tools": [
                    {"type": "function", "function": {"name": "present", "parameters": {"type": "object"}}}
                ],
            },
            "tool_choice",
        ),
    ],
)
def test_caps_are_400_with_param(client: TestClient, overrides: dict[str, object], param: str) -> None:
    error = assert_error(
        client.post("/v1/chat/completions", json=chat(**overrides)),
        400,
        "invalid_request",
        "invalid_request_error",
    )
    assert error["param"] == param


def test_non_text_content_is_a_clear_400(client: TestClient) -> None:
    content = [{"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}]
    r = client.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": content}]))
    assert_error(r, 400, "unsupported_feature", "invalid_request_error")


def test_error_during_stream_ends_with_error_event_not_done(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json=chat(
            model="error-mid-stream",
            stream=True,
            messages=[{"role": "user", "content": "one two three four five"}],
        ),
    ) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == "engine_error"
    assert set(last["error"]) >= {"message", "type", "param", "code"}
    texts = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[1:-1]]
    assert texts == ["one ", "two "]


def test_error_before_first_token_is_an_http_error(client: TestClient) -> None:
    """The engine fails before any token: a streamed request gets a plain 500 in the OpenAI
    shape, not a 200 whose stream then breaks (nothing had been sent yet)."""
    for stream in (True, False):
        r = client.post("/v1/chat/completions", json=chat(model="error-first", stream=stream))
        assert_error(r, 500, "engine_error", "api_error")
        assert not r.headers["content-type"].startswith("text/event-stream")
    r = client.post("/v1/chat/completions", json=chat(model="nope", stream=True))
    assert_error(r, 404, "model_not_found", "not_found_error")


def test_error_after_the_first_token_ends_the_stream_with_an_error_event(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json=chat(model="error-mid-stream", stream=True, messages=[{"role": "user", "content": "a b c"}]),
    ) as r:
        assert r.status_code == 200  # two tokens arrive before the failure: the stream had started
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] != "[DONE]"
    assert json.loads(events[-1])["error"]["code"] == "engine_error"
    assert [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]][-2:] == ["a ", "b "]


def test_stream_done_and_usage_chunk(client: TestClient) -> None:
    with client.stream(
        "POST", "/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True})
    ) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 2


def test_emulated_tool_call_from_json_reply(client: TestClient) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = client.post("/v1/chat/completions", json=chat(model="tool-json", tools=tools, tool_choice="auto"))
    assert r.status_code == 200
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Lyon"}
    assert call["id"].startswith("call_")


def test_n_choices_use_distinct_indices(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=chat(n=2, seed=1))
    assert [c["index"] for c in r.json()["choices"]] == [0, 1]
    assert r.json()["usage"]["completion_tokens"] == 4


def test_fim_on_model_without_fim_is_400(client: TestClient) -> None:
    r = client.post("/v1/fim/completions", json={"model": "echo", "prompt": "def f(", "suffix": "pass"})
    assert_error(r, 400, "unsupported_feature", "invalid_request_error")


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    client.post("/v1/chat/completions", json=chat(max_tokens=1))
    assert client.get("/ready").status_code == 200
