"""A remote provider end to end: one Alizé server (SmolLM2, keys required) is the OpenAI-compatible
upstream of another, which adds it to its catalog as a remote card, deploys it and serves it with
its own limits, metering and usage; the official ``openai`` SDK is the client of the front server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from tests.e2e.conftest import KEYED_ADMIN, REMOTE_KEY_ENV
from tests.e2e.server import LiveServer, admin
from tests.e2e.streaming import finishes_of, text_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

UPSTREAM_ADMIN = KEYED_ADMIN
KEY_ENV = REMOTE_KEY_ENV


@pytest.fixture(scope="module")
def upstream(keyed_server: LiveServer) -> LiveServer:
    """The shared keyed SmolLM2 server (tests/e2e/conftest.py)."""
    return keyed_server


@pytest.fixture(scope="module")
def front(tiny_server: LiveServer) -> LiveServer:
    """The shared tiny-GGUF server, started with the upstream key in ``KEY_ENV`` (conftest)."""
    return tiny_server


@pytest.fixture
def client(front: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=front.v1, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def remote_card(upstream: LiveServer, model_id: str, key_env: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "display_name": "SmolLM2 over HTTP",
        "publisher": "HuggingFaceTB",
        "license": "apache-2.0",
        "open_weights": True,
        "tasks": ["chat", "completion"],
        "context_length": 8192,
        "has_chat_template": True,
        "price_input_per_million": 2_000_000,
        "price_output_per_million": 4_000_000,
        "source": {
            "kind": "remote",
            "base_url": upstream.v1,
            "upstream_model": "smollm2-135m-instruct",
            "api_key_env": key_env,
        },
    }


def ledger_row(server: LiveServer, request_id: str) -> dict[str, Any]:
    r = admin(server, "GET", f"/usage/requests/{request_id}")
    assert r.status_code == 200, r.text
    row: dict[str, Any] = r.json()
    return row


def totals(
    server: LiveServer, deployment: str, headers: dict[str, str], project_id: str | None = None
) -> tuple[int, int, int]:
    params = {"group_by": "deployment", **({"project_id": project_id} if project_id else {})}
    r = httpx.get(f"{server.url}/admin/api/usage", params=params, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    row = next(g for g in r.json()["data"] if g["group"] == deployment)
    return row["requests"], row["prompt_tokens"], row["completion_tokens"]


def test_a_remote_card_is_deployed_served_metered_and_undeployed(
    front: LiveServer, upstream: LiveServer, upstream_key: str, front_project: str, client: openai.OpenAI
) -> None:
    added = admin(front, "POST", "/models", {"card": remote_card(upstream, "smol-remote", KEY_ENV)})
    assert added.status_code == 201, added.text
    assert added.json()["engine"] == "remote"
    deployed = admin(front, "POST", "/deployments", {"name": "smol-remote", "model": "smol-remote"})
    assert deployed.status_code == 201, deployed.text
    messages: Any = [{"role": "user", "content": "Name three colours."}]

    raw = client.chat.completions.with_raw_response.create(
        model="smol-remote", messages=messages, max_tokens=12, temperature=0, seed=3
    )
    reply = raw.parse()
    assert reply.model == "smol-remote" and reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 12
    # SmolLM2's chat template wraps this prompt in about 30 tokens; the upstream's exact count
    # came back (the front's own estimate, used only for the budget hold, is higher)
    assert 10 < reply.usage.prompt_tokens < 60
    row = ledger_row(front, raw.headers["x-request-id"])
    assert row["deployment"] == "smol-remote" and row["status"] == "success"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    expected = -(
        -(reply.usage.prompt_tokens * 2_000_000 + reply.usage.completion_tokens * 4_000_000) // 10**6
    )
    assert row["cost_micros"] == expected

    stream = client.chat.completions.create(
        model="smol-remote",
        messages=messages,
        max_tokens=12,
        temperature=0,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = text_of(chunks)
    finishes = finishes_of(chunks)
    assert text and finishes in (["stop"], ["length"])
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # really streamed
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == reply.usage.prompt_tokens
    assert usage.completion_tokens == reply.usage.completion_tokens  # same greedy reply, same count
    assert text == reply.choices[0].message.content

    stopped = client.chat.completions.create(
        model="smol-remote",
        messages=[{"role": "user", "content": "Count from 1 to 20, separated by commas."}],
        max_tokens=60,
        temperature=0,
        stop=["5"],
    )
    assert "5" not in (stopped.choices[0].message.content or "")

    completion = client.completions.create(
        model="smol-remote", prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert completion.choices[0].text and completion.usage is not None
    assert completion.usage.completion_tokens <= 5 and completion.usage.prompt_tokens > 0

    listed = {m.id: m for m in client.models.list().data}
    card = listed["smol-remote"].model_extra["card"]  # type: ignore[index]
    assert card["engine"] == "remote" and "source" not in card  # no upstream URL in the listing
    view = admin(front, "GET", "/deployments/smol-remote").json()
    assert view["engine"] == "remote" and view["state"]["memory_estimate_bytes"] == 0

    # the upstream metered the same four requests with the same token counts; the key never leaked
    ours = totals(front, "smol-remote", {})
    theirs = totals(
        upstream, "smollm2-135m-instruct", {"Authorization": f"Bearer {UPSTREAM_ADMIN}"}, front_project
    )
    assert ours == theirs and ours[0] == 4
    assert upstream_key not in front.log()
    assert upstream_key not in admin(front, "GET", "/models/smol-remote").text

    gone = admin(front, "DELETE", "/deployments/smol-remote")
    assert gone.status_code == 200, gone.text
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="smol-remote", messages=messages, max_tokens=2)
    assert admin(front, "DELETE", "/models/smol-remote").status_code == 200


def test_a_missing_key_or_an_unreachable_upstream_is_a_clear_503(
    front: LiveServer, upstream: LiveServer, client: openai.OpenAI
) -> None:
    card = remote_card(upstream, "smol-nokey", "ALIZE_E2E_NOT_SET")
    assert admin(front, "POST", "/models", {"card": card}).status_code == 201
    assert (
        admin(front, "POST", "/deployments", {"name": "smol-nokey", "model": "smol-nokey"}).status_code == 201
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="smol-nokey", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503
    assert "ALIZE_E2E_NOT_SET" in caught.value.message

    # an upstream nobody answers at: the front says so and keeps serving
    card = remote_card(upstream, "smol-badkey", KEY_ENV)
    card["source"]["base_url"] = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    assert admin(front, "POST", "/models", {"card": card}).status_code == 201
    assert (
        admin(front, "POST", "/deployments", {"name": "smol-down", "model": "smol-badkey"}).status_code == 201
    )
    with pytest.raises(openai.InternalServerError) as down:
        client.chat.completions.create(model="smol-down", messages=[{"role": "user", "content": "hi"}])
    assert down.value.status_code == 503 and "cannot reach the upstream 127.0.0.1:9" in down.value.message
    assert httpx.get(front.url + "/health", timeout=10).status_code == 200
