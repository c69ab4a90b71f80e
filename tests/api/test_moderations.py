"""``/v1/moderations`` (OpenAI or Mistral shape, chosen by model) and ``/v1/chat/moderations``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.support.apps import local_client

from alize.api.app import create_app
from alize.config import SafetySettings, Settings
from alize.engines.registry import EngineRegistry
from alize.safety.categories import MISTRAL_CATEGORIES, OPENAI_CATEGORIES

HEALTH = "What dose of ibuprofen is safe for a bad headache and how often can I take it?"
BENIGN = "The weather in Lyon is mild today and the market opens at nine."


def _client(tmp_path: Path, safety: SafetySettings | None = None) -> TestClient:
    settings = Settings(
        data_dir=tmp_path, load_on_start=False, deployments=[], safety=safety or SafetySettings()
    )
    return local_client(create_app(settings, registry=EngineRegistry(load_entry_points=False)))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with _client(
        tmp_path_factory.mktemp("moderations"), SafetySettings(max_inputs=4, max_input_chars=1000)
    ) as c:
        yield c


def test_openai_shape_by_default(client: TestClient) -> None:
    response = client.post("/v1/moderations", json={"input": [BENIGN, "mail me: ana@example.org"]})
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("modr-") and body["model"] == "alize-moderation-1"
    first, second = body["results"]
    assert set(first["categories"]) == set(OPENAI_CATEGORIES) == set(first["category_scores"])
    assert first["flagged"] is False and not any(first["categories"].values())
    assert all(0.0 <= v <= 1.0 for v in first["category_scores"].values())
    assert "pii" not in second["categories"]  # OpenAI's set has no PII category


def test_openai_multimodal_text_parts(client: TestClient) -> None:
    body = {"model": "omni-moderation-latest", "input": [{"type": "text", "text": BENIGN}]}
    response = client.post("/v1/moderations", json=body)
    assert response.status_code == 200 and response.json()["model"] == "omni-moderation-latest"


def test_mistral_shape_by_model(client: TestClient) -> None:
    body = {"model": "mistral-moderation-latest", "input": [HEALTH, "mail me: ana@example.org"]}
    response = client.post("/v1/moderations", json=body)
    assert response.status_code == 200
    health, pii = response.json()["results"]
    assert set(health["categories"]) == set(MISTRAL_CATEGORIES)
    assert "flagged" not in health
    assert health["categories"]["health"] is True and health["category_scores"]["health"] > 0.5
    assert pii["categories"]["pii"] is True and pii["category_scores"]["pii"] == 1.0


def test_chat_moderations_judge_each_conversation_as_a_whole(client: TestClient) -> None:
    quiet = [{"role": "user", "content": BENIGN}, {"role": "assistant", "content": "Thanks!"}]
    loud = [*quiet, {"role": "user", "content": [{"type": "text", "text": HEALTH}]}]
    response = client.post(
        "/v1/chat/moderations", json={"model": "mistral-moderation-latest", "input": [quiet, loud]}
    )
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first["categories"]["health"] is False and second["categories"]["health"] is True
    one = client.post("/v1/chat/moderations", json={"model": "mistral-moderation-latest", "input": loud})
    assert len(one.json()["results"]) == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),  # param: the field the error names, always given
    [
        ("/v1/moderations", {"model": "gpt-4o", "input": "x"}, 404, "model"),
        ("/v1/chat/moderations", {"model": "omni-moderation-latest", "input": []}, 404, "model"),
        ("/v1/moderations", {"input": ["a"] * 5}, 400, "input"),
        ("/v1/moderations", {"input": []}, 400, "input"),
        ("/v1/moderations", {"input": "x" * 1001}, 413, "input"),
        ("/v1/chat/moderations", {"input": [[]]}, 400, "input"),
        ("/v1/moderations", {"input": 42}, 422, "input.str"),
    ],
)
def test_bad_requests_get_clear_errors(
    client: TestClient, path: str, body: dict[str, object], status: int, param: str | None
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    assert error["param"] == param


def test_a_broken_classifier_is_a_503_not_a_crash(tmp_path: Path) -> None:
    with _client(tmp_path, SafetySettings(weights_path=tmp_path / "missing.npz")) as broken:
        response = broken.post("/v1/moderations", json={"input": BENIGN})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "classifier_unavailable"
        assert broken.get("/health").status_code == 200


ADMIN = "moderation-admin-key-0123456789abcdef"


def test_moderations_are_rate_limited_metered_and_billed_like_every_call(tmp_path: Path) -> None:
    """Issue 17, fault 3: a key limited to 2 RPM made 10 moderation calls, none metered."""
    settings = Settings(
        data_dir=tmp_path,
        load_on_start=False,
        deployments=[],
        admin_key=ADMIN,
        safety=SafetySettings(price_per_million=1_000_000),  # 1 micro-unit per estimated token
    )
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with local_client(create_app(settings, registry=EngineRegistry(load_entry_points=False))) as c:
        project = c.post(
            "/admin/api/projects", json={"name": "p", "monthly_budget_micros": 10**6}, headers=admin
        )
        project_id = project.json()["id"]
        key = c.post("/admin/api/keys", json={"name": "k", "project_id": project_id, "rpm": 2}, headers=admin)
        user = {"Authorization": f"Bearer {key.json()['key']}"}
        text = "word " * 400  # 2000 characters: 500 estimated tokens
        first = c.post("/v1/moderations", json={"input": text}, headers=user)
        assert first.status_code == 200, first.text
        assert first.headers["x-request-id"].startswith("modr-")
        assert first.headers["x-alize-model"] == "alize-moderation-1"
        second = c.post(
            "/v1/chat/moderations",
            json={"model": "mistral-moderation-latest", "input": [[{"role": "user", "content": text}]]},
            headers=user,
        )
        assert second.status_code == 200, second.text
        third = c.post("/v1/moderations", json={"input": text}, headers=user)
        assert third.status_code == 429 and int(third.headers["Retry-After"]) >= 1
        row = c.get(f"/admin/api/usage/requests/{first.headers['x-request-id']}", headers=admin).json()
        assert (row["deployment"], row["status"], row["prompt_tokens"]) == (
            "alize-moderation-1",
            "success",
            500,
        )
        assert row["cost_micros"] == 500 and row["key_id"] == key.json()["id"]
        budget = c.get(f"/admin/api/projects/{project_id}", headers=admin).json()["budget"]
        assert budget["spent_micros"] == 1000 and budget["reserved_micros"] == 0


def test_each_moderation_model_has_its_own_price(tmp_path: Path) -> None:
    """``safety.model_prices`` names a model's price; the others cost ``price_per_million``."""
    settings = Settings(
        data_dir=tmp_path,
        load_on_start=False,
        deployments=[],
        admin_key=ADMIN,
        safety=SafetySettings(
            price_per_million=1_000_000, model_prices={"mistral-moderation-latest": 3_000_000}
        ),
    )
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with local_client(create_app(settings, registry=EngineRegistry(load_entry_points=False))) as c:
        project = c.post(
            "/admin/api/projects", json={"name": "p", "monthly_budget_micros": 10**6}, headers=admin
        )
        key = c.post("/admin/api/keys", json={"name": "k", "project_id": project.json()["id"]}, headers=admin)
        user = {"Authorization": f"Bearer {key.json()['key']}"}
        text = "word " * 400  # 500 estimated tokens
        costs = {}
        for model in ("omni-moderation-latest", "mistral-moderation-latest"):
            reply = c.post("/v1/moderations", json={"model": model, "input": text}, headers=user)
            assert reply.status_code == 200, reply.text
            row = c.get(f"/admin/api/usage/requests/{reply.headers['x-request-id']}", headers=admin).json()
            costs[model] = row["cost_micros"]
        assert costs == {"omni-moderation-latest": 500, "mistral-moderation-latest": 1500}
