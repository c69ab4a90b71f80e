"""Safety settings over HTTP: ``ALIZE_SAFETY__TIMEOUT_S`` reaches the filters, and every change
of a deployment's policy is written to the audit log.

The timeout is set below anything the real classifier can do (a microsecond), so every filter
times out and each policy's ``on_error`` shows (tests/gateway/test_safety_timeout.py holds the
classifier back with an event instead, to check the boundary itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.apps import local_client
from tests.support.scripted_engine import ScriptedEngine

from alize.api.app import create_app
from alize.config import DeploymentSettings, SafetySettings, Settings
from alize.engines.registry import EngineRegistry
from alize.safety.policy import SafetyPolicy

BENIGN = "The weather in Lyon is mild today and the market opens at nine as usual."
TIMEOUT_S = 1e-6
POLICIES: dict[str, dict[str, Any]] = {
    "closed-in": {"input": {}},  # on_error defaults to block
    "open-in": {"input": {"on_error": "allow"}},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("safety-admin"),
        default_model="open-in",
        load_on_start=False,
        deployments=[
            DeploymentSettings(
                name=name,
                engine="scripted",
                model_path=Path("echo"),
                ctx_per_slot=512,
                safety=SafetyPolicy.model_validate(policy),
            )
            for name, policy in POLICIES.items()
        ],
        safety=SafetySettings(timeout_s=TIMEOUT_S),
    )
    # the installed engines too: the audit test deploys SmolLM2 (stored, never loaded here)
    registry = EngineRegistry()
    registry.register("scripted", ScriptedEngine)
    with local_client(create_app(settings, registry=registry)) as c:
        yield c


def _chat(client: TestClient, model: str) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": BENIGN}], "max_tokens": 50}
    return client.post("/v1/chat/completions", json=body)


def test_a_filter_past_the_timeout_fails_closed(client: TestClient) -> None:
    response = _chat(client, "closed-in")
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "content_filter_error"
    assert f"did not answer within {TIMEOUT_S:g} s" in error["message"]
    assert error["innererror"]["content_filter_result"]["failed_closed"] is True


def test_a_filter_past_the_timeout_lets_through_when_allowed_and_says_so(client: TestClient) -> None:
    response = _chat(client, "open-in")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"].strip() == BENIGN
    results = body["prompt_filter_results"][0]["content_filter_results"]
    assert results["failed_closed"] is False
    assert results["error"]["message"] == f"the content classifier did not answer within {TIMEOUT_S:g} s"


def _audit(client: TestClient, target: str) -> list[dict[str, Any]]:
    response = client.get("/admin/api/audit", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [e for e in reversed(response.json()["data"]) if e["target"] == target]  # oldest first


def test_every_policy_change_is_in_the_audit_log(client: TestClient) -> None:
    first = {"input": {"pii": "redact", "on_error": "block"}, "output": None, "window_tokens": 16}
    created = client.post(
        "/admin/api/deployments", json={"name": "audited", "model": "smollm2-135m-instruct", "safety": first}
    )
    assert created.status_code == 201, created.text
    stricter = {"input": {"pii": "block"}, "output": {"categories": {"health": {"action": "block"}}}}
    for change in ({"safety": stricter}, {"safety": None}):
        response = client.patch("/admin/api/deployments/audited", json=change)
        assert response.status_code == 200, response.text
        shown = response.json()["safety"]
        assert shown == (
            SafetyPolicy.model_validate(stricter).model_dump(mode="json") if change["safety"] else None
        )
    entries = _audit(client, "audited")
    assert [e["action"] for e in entries] == ["deployment.create", "deployment.update", "deployment.update"]
    assert entries[0]["details"]["safety"] == first
    assert [e["details"] for e in entries[1:]] == [{"safety": stricter}, {"safety": None}]
    assert client.get("/admin/api/audit/verify").json()["ok"] is True  # the chain holds
    assert client.delete("/admin/api/deployments/audited").status_code == 200


def test_a_declared_deployments_policy_is_changed_only_in_the_settings(client: TestClient) -> None:
    """What docs/operations.md says: the admin API (and so `alize safety`) refuses it, and
    nothing is audited."""
    response = client.patch("/admin/api/deployments/closed-in", json={"safety": None})
    assert response.status_code == 409, response.text
    assert "ALIZE_DEPLOYMENTS" in response.json()["error"]["message"]
    assert _audit(client, "closed-in") == []
    shown = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert shown["closed-in"]["card"]["deployment"]["safety"]["input"] is not None  # unchanged
