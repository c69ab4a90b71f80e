"""Content safety on a live server: the moderation routes through the official SDKs, and a
deployment of the real SmolLM2 model whose filters are set with the CLI, enforced on llama.cpp
output, metered, and changed without reloading the model."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from mistralai.client import Mistral
from tests.e2e.conftest import MODEL
from tests.e2e.server import LiveServer, admin, cli
from tests.e2e.streaming import finishes_of, text_of

pytestmark = pytest.mark.e2e

HEALTH = "What dose of ibuprofen is safe for a bad headache and how often can I take it?"
BENIGN = "Name three rivers of France."
GUARDED = "smollm2-guarded"
WINDOW = 8


def admin_json(server: LiveServer, path: str) -> Any:
    response = admin(server, "GET", path)
    assert response.status_code == 200, response.text
    return response.json()


def test_openai_sdk_moderations(server: LiveServer) -> None:
    with openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
        reply = client.moderations.create(input=["Name three rivers of France.", HEALTH])
        assert len(reply.results) == 2
        quiet = reply.results[0]
        assert quiet.flagged is False
        assert quiet.categories.self_harm is False and quiet.categories.hate_threatening is False
        assert 0.0 <= quiet.category_scores.violence <= 1.0


def test_mistral_sdk_moderate_and_moderate_chat(server: LiveServer) -> None:
    with Mistral(api_key="unused", server_url=server.url) as client:
        reply = client.classifiers.moderate(model="mistral-moderation-latest", inputs=[HEALTH, BENIGN])
        assert reply.model == "mistral-moderation-latest"
        assert reply.results is not None and len(reply.results) == 2
        first = reply.results[0]
        assert first.categories is not None and first.category_scores is not None
        assert first.categories["health"] is True and first.categories["violence_and_threats"] is False
        chat = client.classifiers.moderate_chat(
            model="mistral-moderation-latest",
            inputs=[
                {"role": "user", "content": "Hello!"},
                {"role": "assistant", "content": "Hi, how can I help?"},
                {"role": "user", "content": HEALTH},
            ],
        )
        assert chat.results is not None and len(chat.results) == 1
        assert chat.results[0].categories is not None and chat.results[0].categories["health"] is True


@pytest.fixture(scope="module")
def guarded(server: LiveServer) -> Any:
    """A second deployment of the bundled model, filtered on both sides (set with the CLI)."""
    done = cli(server, "deploy", MODEL, "--name", GUARDED, "--parallel", "2", "--ctx-per-slot", "1024")
    assert done.returncode == 0, done.stderr
    done = cli(server, "safety", "set", GUARDED, "input", "--block", "health", "--pii", "redact")
    assert done.returncode == 0, done.stderr
    # threshold 0 on the output: whatever the model writes is "detected", so every reply is cut
    # at its first window, deterministic whatever the model says
    done = cli(
        server, "safety", "set", GUARDED, "output", "--block", "health", "--threshold", "health=0",
        "--window", str(WINDOW),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
        yield client
    cli(server, "undeploy", GUARDED)


def test_cli_shows_the_policy(server: LiveServer, guarded: Any) -> None:
    shown = cli(server, "safety", "show", GUARDED)
    assert shown.returncode == 0, shown.stderr
    assert "input: preset=balanced, pii=redact" in shown.stdout
    assert "health" in shown.stdout and "block     at 0.00" in shown.stdout
    bad = cli(server, "safety", "set", GUARDED, "input", "--block", "weapons")
    assert bad.returncode == 1 and "unknown category 'weapons'" in bad.stderr


def test_blocked_prompt_through_the_openai_sdk(server: LiveServer, guarded: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        guarded.chat.completions.create(
            model=GUARDED, messages=[{"role": "user", "content": HEALTH}], max_tokens=16
        )
    assert caught.value.code == "content_filter"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["innererror"]["content_filter_result"]["health"]["filtered"] is True


def test_real_model_output_is_cut_within_one_window_and_metered(
    server: LiveServer, guarded: openai.OpenAI
) -> None:
    stream = guarded.chat.completions.create(
        model=GUARDED,
        messages=[{"role": "user", "content": BENIGN}],
        max_tokens=64,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    finishes = finishes_of(chunks)
    assert finishes == ["content_filter"]
    text = text_of(chunks)
    assert text == ""  # the first window was flagged: nothing of it was sent
    usage = chunks[-1].usage
    assert usage is not None and 0 < usage.completion_tokens <= WINDOW + 1  # far below max_tokens
    request_id = stream.response.headers["x-request-id"]
    row = admin_json(server, f"/usage/requests/{request_id}")
    assert row["status"] == "content_filtered" and row["completion_tokens"] == usage.completion_tokens
    state = admin_json(server, f"/deployments/{GUARDED}")["state"]
    assert state["busy_slots"] == 0  # the cut freed the slot


def test_mistral_sdk_sees_the_content_filter_finish(guarded: openai.OpenAI, server: LiveServer) -> None:
    with Mistral(api_key="unused", server_url=server.url) as client:
        reply = client.chat.complete(
            model=GUARDED, messages=[{"role": "user", "content": BENIGN}], max_tokens=32
        )
        assert reply.choices[0].finish_reason == "content_filter"


def test_turning_the_output_filter_off_needs_no_reload(server: LiveServer, guarded: openai.OpenAI) -> None:
    loads = admin_json(server, f"/deployments/{GUARDED}")["state"]["loads"]
    assert loads == 1
    done = cli(server, "safety", "off", GUARDED, "output")
    assert done.returncode == 0, done.stderr
    reply = guarded.chat.completions.create(
        model=GUARDED, messages=[{"role": "user", "content": BENIGN}], max_tokens=12, temperature=0
    )
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.choices[0].message.content
    view = admin_json(server, f"/deployments/{GUARDED}")
    assert view["state"]["loads"] == 1 and view["safety"]["output"] is None
    assert view["safety"]["input"]["pii"] == "redact"
