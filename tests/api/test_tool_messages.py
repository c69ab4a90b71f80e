"""A ``tool`` message must answer an assistant's tool calls (issue 17, fault 7): a lone one is a
400 in the OpenAI error shape, on the OpenAI and the Azure routes, never a hang."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.api.test_errors import assert_error
from tests.support.apps import scripted_client

CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with scripted_client(tmp_path_factory.mktemp("tools")) as c:
        yield c


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/models/chat/completions"])
@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "tool"}],
        [{"role": "tool", "content": "42", "tool_call_id": "call_1"}],
        [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42", "tool_call_id": "x"}],
        [{"role": "assistant", "content": "no calls"}, {"role": "tool", "content": "42"}],
    ],
)
def test_a_tool_message_without_tool_calls_before_it_is_400(
    client: TestClient, path: str, messages: list[dict[str, object]]
) -> None:
    r = client.post(path, json={"model": "echo", "messages": messages, "max_tokens": 4})
    error = assert_error(r, 400, "invalid_tool_message", "invalid_request_error")
    assert str(error["param"]).startswith("messages.")


def test_tool_results_after_tool_calls_are_fine(client: TestClient) -> None:
    messages = [
        {"role": "user", "content": "call f twice"},
        {"role": "assistant", "content": None, "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
        {"role": "tool", "content": "1", "tool_call_id": "call_1"},
        {"role": "tool", "content": "2", "tool_call_id": "call_2"},
    ]
    r = client.post("/v1/chat/completions", json={"model": "echo", "messages": messages, "max_tokens": 4})
    assert r.status_code == 200, r.text
