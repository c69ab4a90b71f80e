"""The direct chat route (``api/direct_route.py``): a valid chat request is answered without
FastAPI's router and dependency solver, with the same reply, headers, metrics label and error
handling; anything else reaches FastAPI with its body intact, so its errors are FastAPI's own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.dependencies import utils as dependency_utils
from fastapi.testclient import TestClient
from tests.support.apps import scripted_client

from alize.api.chat_completions import chat_completions
from alize.api.direct_route import PATH, DirectChatRoute, _find_route

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with scripted_client(tmp_path_factory.mktemp("direct")) as c:
        yield c


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths FastAPI's dependency solver ran for (every FastAPI route with a body runs it)."""
    paths: list[str] = []
    solve = dependency_utils.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        paths.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr("fastapi.routing.solve_dependencies", counting)
    return paths


def test_a_valid_chat_request_skips_fastapis_machinery_and_gets_the_same_reply(
    client: TestClient, solved: list[str]
) -> None:
    reply = client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200, reply.text
    assert reply.json()["object"] == "chat.completion" and reply.json()["model"] == "echo"
    assert reply.headers["x-alize-deployment"] == "echo"
    streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert solved == []  # neither went through FastAPI's dependency solver
    # the route through FastAPI still answers the same (another content type FastAPI reads as JSON)
    through_fastapi = client.post(
        "/v1/chat/completions", content=json.dumps(CHAT), headers={"content-type": "text/plain"}
    )
    assert solved == ["/v1/chat/completions"]
    assert through_fastapi.status_code in (400, 422)  # text/plain is not JSON to FastAPI either


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"model": "echo", "messages": [', "invalid_json"),
        (json.dumps({"model": "echo"}).encode(), None),
        (json.dumps({**CHAT, "max_tokens": -1}).encode(), None),
        (json.dumps([CHAT]).encode(), None),
    ],
)
def test_a_body_that_does_not_validate_gets_fastapis_own_error(
    client: TestClient, solved: list[str], body: bytes, code: str | None
) -> None:
    reply = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert reply.status_code in (400, 422), reply.text
    error = reply.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    if code is not None:  # FastAPI refuses JSON it cannot decode before solving anything
        assert error["code"] == code
    else:  # replayed to FastAPI, which read the same body and validated it
        assert solved == ["/v1/chat/completions"]


def test_errors_raised_while_answering_go_to_the_apps_handlers(client: TestClient, solved: list[str]) -> None:
    reply = client.post("/v1/chat/completions", json={**CHAT, "model": "no-such-model"})
    assert reply.status_code == 404, reply.text
    assert reply.json()["error"]["code"] == "model_not_found"
    assert solved == []


def _http_count(client: TestClient, status: str, route: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if (
            line.startswith("alize_http_requests_total{")
            and f'route="{route}"' in line
            and f'status="{status}"' in line
            and 'method="POST"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_metrics_label_the_route_not_other(client: TestClient, solved: list[str]) -> None:
    before = (
        _http_count(client, "200", PATH),
        _http_count(client, "404", PATH),
        _http_count(client, "404", "other"),
    )
    assert client.post(PATH, json=CHAT).status_code == 200
    assert client.post(PATH, json={**CHAT, "model": "no-such-model"}).status_code == 404
    assert PATH not in solved  # both answered by the direct route
    after = (
        _http_count(client, "200", PATH),
        _http_count(client, "404", PATH),
        _http_count(client, "404", "other"),
    )
    assert after == (before[0] + 1, before[1] + 1, before[2])


def test_the_route_is_found_in_the_app_not_stood_in_for(client: TestClient) -> None:
    found = _find_route(client.app.routes)  # type: ignore[attr-defined]
    assert found is not None and getattr(found, "endpoint", None) is chat_completions


async def test_a_client_gone_before_its_body_ended_reaches_fastapi_with_what_it_sent() -> None:
    """Nothing the gate read is lost: the partial body and the disconnect are replayed in order."""
    sent = [
        {"type": "http.request", "body": b'{"model": ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    inbox = list(sent)

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    seen: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.extend([await receive(), await receive()])

    async def send(_: Any) -> None:
        raise AssertionError("the gate answered itself")

    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "headers": [(b"content-type", b"application/json")],
    }
    await DirectChatRoute(inner)(scope, receive, send)
    assert seen == sent
