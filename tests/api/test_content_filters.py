"""Each content-filter action over HTTP, streamed and not, with the real classifier and PII
detectors in front of the scripted ``echo`` engine (it streams the user's message back one word
per token, so what the model "says" is exactly what the test wrote).

Category rules use ``health``: the classifier is sure of a dosage question (score ~1) and of a
weather report (score ~0.1), so these tests pin the policy plumbing, not the classifier's
accuracy on the harm categories (bench/moderation.py measures that).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.apps import scripted_app

from alize.config import ChatSettings, DeploymentSettings, SafetySettings, Settings
from alize.gateway.projects import ProjectService
from alize.safety.policy import SafetyPolicy

BENIGN = "The weather in Lyon is mild today and the market opens at nine as usual for everyone here."
HEALTH = "What dose of ibuprofen is safe for a bad headache and how often can I take it?"
#: a sustained passage, as a model writes one: the output filter judges recent text, not words
PASSAGE = (
    f"{HEALTH} Can I take paracetamol with it, and what is the maximum daily dose for an adult? "
    "My doctor is away, should I double the dose of my blood pressure pills?"
)
LAST_WORDS = "blood pressure pills"
EMAIL_TEXT = "Please write to jean.dupont@example.com about the invoice before Friday."
WINDOW = 4

POLICIES: dict[str, dict[str, Any]] = {
    "guard-in": {"input": {"categories": {"health": {"action": "block"}}}},
    "annotate-in": {"input": {"pii": "annotate"}},
    "redact-in": {"input": {"pii": "redact"}},
    "guard-out": {"output": {"categories": {"health": {"action": "block"}}}, "window_tokens": WINDOW},
    "redact-out": {"output": {"pii": "redact"}, "window_tokens": 3},
    "open": {"input": {"on_error": "allow"}, "output": {"on_error": "allow"}},
    "closed-out": {"output": {}},
    "plain": {},
}


def _app(tmp_path: Path, *, weights: Path | None = None) -> TestClient:
    settings = Settings(
        data_dir=tmp_path,
        default_model="plain",
        load_on_start=False,
        deployments=[
            DeploymentSettings(
                name=name,
                engine="scripted",
                model_path=Path("echo"),
                ctx_per_slot=1024,
                safety=SafetyPolicy.model_validate(policy) if policy else None,
            )
            for name, policy in POLICIES.items()
        ],
        safety=SafetySettings(weights_path=weights),
        chat=ChatSettings(max_tokens=4000),  # more than any deployment's context here
    )
    return scripted_app(settings)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with _app(tmp_path_factory.mktemp("filters")) as c:
        yield c


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The classifier's weights are missing: every filter fails, each as its policy says."""
    path = tmp_path_factory.mktemp("broken")
    with _app(path, weights=path / "missing.npz") as c:
        yield c


def _chat(
    client: TestClient, model: str, text: str, *, stream: bool = False, before: str = "", **extra: Any
) -> Any:
    """A chat turn; ``before`` is an earlier user message (the echo engine repeats only ``text``)."""
    earlier = [{"role": "user", "content": before}, {"role": "assistant", "content": "OK."}] if before else []
    messages = [*earlier, {"role": "user", "content": text}]
    body = {"model": model, "messages": messages, "max_tokens": 200, **extra}
    return client.post("/v1/chat/completions", json={**body, "stream": stream})


def _events(response: Any) -> list[dict[str, Any]]:
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]", lines[-1]
    return [json.loads(line) for line in lines[:-1]]


def _row(client: TestClient, request_id: str) -> dict[str, Any]:
    response = client.get(f"/admin/api/usage/requests/{request_id}")
    assert response.status_code == 200, response.text
    row: dict[str, Any] = response.json()
    return row


@pytest.mark.parametrize("stream", [False, True])
def test_blocked_prompt_is_a_400_with_every_category_and_a_row(client: TestClient, stream: bool) -> None:
    response = _chat(client, "guard-in", HEALTH, stream=stream)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_filter" and error["type"] == "invalid_request_error"
    assert error["param"] == "messages" and "health" in error["message"]
    results = error["innererror"]["content_filter_result"]
    assert results["health"]["filtered"] is True and results["health"]["severity"] == "high"
    assert results["violence_and_threats"]["filtered"] is False
    row = _row(client, response.headers["x-request-id"])
    assert row["status"] == "content_filtered" and row["error_code"] == "content_filter"
    assert row["prompt_tokens"] == 0 and row["cost_micros"] == 0
    assert _chat(client, "guard-in", BENIGN, stream=stream).status_code == 200


def test_blocked_prompt_on_completions_too(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"model": "guard-in", "prompt": HEALTH, "max_tokens": 5})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"


@pytest.mark.parametrize("stream", [False, True])
def test_annotate_lets_the_prompt_through_and_reports_it(client: TestClient, stream: bool) -> None:
    # the conversation is judged by its worst message: the health question in an earlier turn
    response = _chat(client, "annotate-in", EMAIL_TEXT, before=HEALTH, stream=stream)
    assert response.status_code == 200
    body = _events(response)[0] if stream else response.json()
    [prompt] = body["prompt_filter_results"]
    results = prompt["content_filter_results"]
    assert results["health"] == {**results["health"], "detected": True, "filtered": False}
    assert results["pii"] == {"filtered": False, "detected": True, "redacted": False, "kinds": ["EMAIL"]}
    assert "jean.dupont" not in json.dumps(prompt)  # kinds, never values
    text = (
        "".join(e["choices"][0]["delta"].get("content") or "" for e in _events(response) if e["choices"])
        if stream
        else body["choices"][0]["message"]["content"]
    )
    assert "jean.dupont@example.com" in text  # annotate changes nothing the model sees


@pytest.mark.parametrize("stream", [False, True])
def test_redacted_prompt_reaches_the_model_without_the_address(client: TestClient, stream: bool) -> None:
    response = _chat(client, "redact-in", EMAIL_TEXT, stream=stream)
    assert response.status_code == 200
    text = (
        "".join(e["choices"][0]["delta"].get("content") or "" for e in _events(response) if e["choices"])
        if stream
        else response.json()["choices"][0]["message"]["content"]
    )
    assert "[EMAIL]" in text and "@" not in text


@pytest.mark.parametrize("stream", [False, True])
def test_blocked_output_stops_with_content_filter_and_is_metered(client: TestClient, stream: bool) -> None:
    said = f"{BENIGN} {PASSAGE} {BENIGN}"
    response = _chat(client, "guard-out", said, stream=stream, stream_options={"include_usage": True})
    assert response.status_code == 200
    if stream:
        events = _events(response)
        choices = [e["choices"][0] for e in events if e["choices"]]
        text = "".join(c["delta"].get("content") or "" for c in choices)
        last = choices[-1]
        usage = events[-1]["usage"]
    else:
        body = response.json()
        last = body["choices"][0]
        text, usage = last["message"]["content"] or "", body["usage"]
    assert last["finish_reason"] == "content_filter"
    assert last["content_filter_results"]["health"]["filtered"] is True
    assert said.startswith(text.strip()) and LAST_WORDS not in text
    # the cut bound: generation stopped within one window (+1 token in flight) of released text
    released = len(text.split())
    assert released < len(said.split())
    assert usage["completion_tokens"] - released <= WINDOW + 1
    row = _row(client, response.headers["x-request-id"])
    assert row["status"] == "content_filtered"
    assert row["completion_tokens"] == usage["completion_tokens"] > 0


def test_each_of_several_choices_is_cut_on_its_own(client: TestClient) -> None:
    said = f"{BENIGN} {PASSAGE} {BENIGN} {BENIGN}"
    body = _chat(client, "guard-out", said, n=3).json()
    assert [c["finish_reason"] for c in body["choices"]] == ["content_filter"] * 3
    released = sum(len((c["message"]["content"] or "").split()) for c in body["choices"])
    # every choice's engine stopped within one window (+1 token in flight) of its released text
    assert body["usage"]["completion_tokens"] - released <= 3 * (WINDOW + 1)
    assert body["usage"]["completion_tokens"] < 3 * len(said.split())


def test_policies_are_validated_with_readable_errors(client: TestClient) -> None:
    bad = {"model": "x", "name": "y", "safety": {"input": {"categories": {"weapons": {}}}}}
    response = client.post("/admin/api/deployments", json=bad)
    assert response.status_code == 422
    assert "unknown categories ['weapons']" in response.json()["error"]["message"]
    bad["safety"] = {"output": {"pii": "shred"}}
    assert client.post("/admin/api/deployments", json=bad).status_code == 422


@pytest.mark.parametrize("stream", [False, True])
def test_redacted_output_streams_without_the_address(client: TestClient, stream: bool) -> None:
    said = f"{BENIGN} {EMAIL_TEXT} Call +33 6 12 34 56 78 if needed."
    response = _chat(client, "redact-out", said, stream=stream)
    assert response.status_code == 200
    if stream:
        choices = [e["choices"][0] for e in _events(response) if e["choices"]]
        chunks = [c["delta"].get("content") or "" for c in choices]
        assert len([c for c in chunks if c]) > 3  # it streamed in windows, not all at the end
        assert not any("@" in c or "56 78" in c for c in chunks)
        text, last = "".join(chunks), choices[-1]
    else:
        last = response.json()["choices"][0]
        text = last["message"]["content"]
    assert "[EMAIL]" in text and "[PHONE]" in text and "jean" not in text
    assert last["finish_reason"] == "stop"
    assert last["content_filter_results"]["pii"]["redacted"] is True


def test_unfiltered_deployments_carry_no_filter_fields(client: TestClient) -> None:
    body = _chat(client, "plain", EMAIL_TEXT).json()
    assert "prompt_filter_results" not in body
    assert "content_filter_results" not in body["choices"][0]


@pytest.mark.parametrize("stream", [False, True])
def test_failed_classifier_fails_closed_on_input(broken: TestClient, stream: bool) -> None:
    response = _chat(broken, "guard-in", BENIGN, stream=stream)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    error = response.json()["error"]
    assert error["code"] == "content_filter_error" and "fail closed" in error["message"]
    result = error["innererror"]["content_filter_result"]
    assert result["failed_closed"] is True and result["error"]["code"] == "content_filter_error"
    assert _row(broken, response.headers["x-request-id"])["status"] == "error"


@pytest.mark.parametrize("stream", [False, True])
def test_failed_classifier_fails_closed_on_output(broken: TestClient, stream: bool) -> None:
    response = _chat(broken, "closed-out", BENIGN, stream=stream)
    assert response.status_code == 200
    if stream:
        last = [e["choices"][0] for e in _events(response) if e["choices"]][-1]
        text = ""
    else:
        last = response.json()["choices"][0]
        text = last["message"]["content"] or ""
    assert last["finish_reason"] == "content_filter" and text == ""
    assert last["content_filter_results"]["failed_closed"] is True


def test_failed_classifier_with_allow_says_so_and_answers(broken: TestClient) -> None:
    body = _chat(broken, "open", BENIGN).json()
    assert body["choices"][0]["message"]["content"].strip() == BENIGN
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["prompt_filter_results"][0]["content_filter_results"]["failed_closed"] is False
    assert body["choices"][0]["content_filter_results"]["error"]["code"] == "content_filter_error"


def test_declared_policies_are_shown_to_callers(client: TestClient) -> None:
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    shown = models["guard-in"]["card"]["deployment"]["safety"]
    assert shown["input"]["categories"]["health"]["action"] == "block"
    assert models["plain"]["card"]["deployment"]["safety"] is None


def test_the_chat_assistant_says_when_the_filter_cut_a_reply(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    assert client.portal is not None
    client.portal.call(ProjectService(services.db).create, "chatters")
    client.portal.call(services.chat.users.create, "chatters", "ana@example.org", "a-long-password")
    origin = {"origin": "http://127.0.0.1"}
    me = client.post(
        "/chat/api/login", json={"email": "ana@example.org", "password": "a-long-password"}, headers=origin
    )
    assert me.status_code == 200, me.text
    headers = {**origin, "x-csrf-token": me.json()["csrf_token"]}
    conversation = client.post("/chat/api/conversations", json={"model": "guard-out"}, headers=headers).json()
    said = f"{BENIGN} {PASSAGE} {BENIGN}"
    reply = client.post(
        f"/chat/api/conversations/{conversation['id']}/messages", json={"content": said}, headers=headers
    )
    events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["error", "done"]
    assert events[-2]["error"]["code"] == "content_filter"
    shown = "".join(e["text"] for e in events if e["type"] == "delta")
    assert shown and said.startswith(shown.strip()) and LAST_WORDS not in shown
    saved = events[-1]["message"]
    assert saved["content"] == shown and saved["status"] == "error"
    # an unfiltered deployment answers in full: the reply is capped by the context's room, not
    # refused because chat.max_tokens (4000) is more than the context (1024) holds
    plain = client.post("/chat/api/conversations", json={"model": "plain"}, headers=headers).json()
    reply = client.post(
        f"/chat/api/conversations/{plain['id']}/messages", json={"content": said}, headers=headers
    )
    events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "done" and events[-1]["message"]["status"] == "complete"
    assert events[-1]["message"]["content"].strip() == said
