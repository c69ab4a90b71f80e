"""The tenancy admin API: projects, keys, usage (JSON and CSV), audit; cross-project isolation
(404), rate-limit headers and 429s, one ledger row per request."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.api.test_auth import ADMIN, CHAT, assert_error, bearer, make_settings
from tests.support.apps import local_client
from tests.support.scripted_engine import ScriptedEngine

from alize.api.app import create_app
from alize.engines.registry import EngineRegistry


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    registry = EngineRegistry(load_entry_points=False)
    registry.register("scripted", ScriptedEngine)
    with local_client(create_app(make_settings(tmp_path, admin_key=ADMIN), registry=registry)) as c:
        yield c


def post(client: TestClient, path: str, key: str = ADMIN, **body: object) -> dict[str, object]:
    r = client.post(path, json=body, headers=bearer(key))
    assert r.status_code in (200, 201), r.text
    data: dict[str, object] = r.json()
    return data


def tenant(client: TestClient, name: str, **limits: object) -> tuple[str, str, str]:
    """(project id, its project-admin key, an inference key)."""
    project = str(post(client, "/admin/api/projects", name=name, **limits)["id"])
    admin = str(post(client, "/admin/api/keys", name="a", project_id=project, scopes=["admin"])["key"])
    user = str(post(client, "/admin/api/keys", name="u", project_id=project)["key"])
    return project, admin, user


def test_projects_keys_usage_and_cross_project_404(client: TestClient) -> None:
    a, a_admin, a_user = tenant(client, "acme")
    b, b_admin, b_user = tenant(client, "globex")
    for key in (a_user, a_user, b_user):
        r = client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
        assert r.status_code == 200, r.text
    request_id = r.headers["x-request-id"]

    # a project admin sees only its own project, and everything of another is 404
    assert [p["id"] for p in client.get("/admin/api/projects", headers=bearer(a_admin)).json()["data"]] == [a]
    assert_error(
        client.get(f"/admin/api/projects/{b}", headers=bearer(a_admin)), 404, "not_found", "not_found_error"
    )
    r = client.get("/admin/api/keys", params={"project_id": b}, headers=bearer(a_admin))
    assert_error(r, 404, "not_found", "not_found_error")
    b_keys = client.get("/admin/api/keys", headers=bearer(b_admin)).json()["data"]
    assert {k["project_id"] for k in b_keys} == {b}
    assert all("key" not in k and "hash" not in k and "salt" not in k for k in b_keys)
    r = client.post(f"/admin/api/keys/{b_keys[0]['id']}/revoke", headers=bearer(a_admin))
    assert_error(r, 404, "not_found", "not_found_error")
    r = client.get("/admin/api/usage", params={"project_id": b}, headers=bearer(a_admin))
    assert_error(r, 404, "not_found", "not_found_error")
    r = client.get(f"/admin/api/usage/requests/{request_id}", headers=bearer(a_admin))
    assert_error(r, 404, "not_found", "not_found_error")
    r = client.post("/admin/api/keys", json={"name": "x", "project_id": b}, headers=bearer(a_admin))
    assert_error(r, 404, "not_found", "not_found_error")
    # ... and cannot lift its own budget or create projects
    r = client.patch(f"/admin/api/projects/{a}", json={"rpm": None}, headers=bearer(a_admin))
    assert_error(r, 403, "platform_admin_required", "permission_error")

    mine = client.get("/admin/api/usage", params={"group_by": "key"}, headers=bearer(a_admin)).json()
    assert sum(g["requests"] for g in mine["data"]) == 2
    everyone = client.get("/admin/api/usage", params={"group_by": "project"}, headers=bearer(ADMIN)).json()
    assert {g["group"]: g["requests"] for g in everyone["data"]} == {a: 2, b: 1}
    row = client.get(f"/admin/api/usage/requests/{request_id}", headers=bearer(b_admin)).json()
    assert (row["project_id"], row["status"], row["deployment"]) == (b, "success", "echo")
    assert row["completion_tokens"] == 2 and row["latency_ms"] is not None

    text = client.get("/admin/api/usage.csv", params={"group_by": "deployment"}, headers=bearer(ADMIN)).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["group"] == "echo" and rows[0]["requests"] == "3"
    same = client.get(
        "/admin/api/usage", params={"group_by": "deployment", "format": "csv"}, headers=bearer(ADMIN)
    )
    assert same.text == text and same.headers["content-type"].startswith("text/csv")


def test_rate_limits_429_and_headers(client: TestClient) -> None:
    _, _, user = tenant(client, "limited", rpm=2)
    for _ in range(2):
        ok = client.post("/v1/chat/completions", json=CHAT, headers=bearer(user))
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-limit-requests"] == "2"
        assert "x-ratelimit-remaining-requests" in ok.headers and "x-ratelimit-reset-requests" in ok.headers
    refused = client.post("/v1/chat/completions", json=CHAT, headers=bearer(user))
    assert_error(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert int(refused.headers["retry-after"]) >= 1 and int(refused.headers["retry-after-ms"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_streaming_request_gets_headers_and_one_row(client: TestClient) -> None:
    _, admin, user = tenant(client, "streamer", tpm=100_000)
    with client.stream(
        "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(user)
    ) as r:
        assert r.status_code == 200 and "x-ratelimit-limit-tokens" in r.headers
        body = "".join(r.iter_text())
    assert "[DONE]" in body
    row = client.get(f"/admin/api/usage/requests/{r.headers['x-request-id']}", headers=bearer(admin)).json()
    assert row["status"] == "success" and row["completion_tokens"] == 2
    assert client.get("/admin/api/usage", headers=bearer(admin)).json()["data"][0]["requests"] == 1


def test_budget_update_and_audit_trail(client: TestClient) -> None:
    project, _, _ = tenant(client, "audited")
    r = client.patch(
        f"/admin/api/projects/{project}",
        json={"monthly_budget_micros": 5000, "tpm": 1000},
        headers=bearer(ADMIN),
    )
    assert r.status_code == 200
    assert r.json()["monthly_budget_micros"] == 5000 and r.json()["limits"]["tpm"] == 1000
    detail = client.get(f"/admin/api/projects/{project}", headers=bearer(ADMIN)).json()
    assert detail["budget"]["remaining_micros"] == 5000
    entries = client.get("/admin/api/audit", headers=bearer(ADMIN)).json()["data"]
    actions = [e["action"] for e in entries]
    assert actions[:4] == ["project.update", "key.create", "key.create", "project.create"]
    assert "key.bootstrap" in actions
    assert client.get("/admin/api/audit/verify", headers=bearer(ADMIN)).json() == {
        "ok": True,
        "first_bad_seq": None,
    }
    _, project_admin, _ = tenant(client, "other")
    r = client.get("/admin/api/audit", headers=bearer(project_admin))
    assert_error(r, 403, "platform_admin_required", "permission_error")


def test_bad_admin_input_is_a_4xx(client: TestClient) -> None:
    r = client.post("/admin/api/keys", json={"name": "x", "scopes": ["root"]}, headers=bearer(ADMIN))
    assert r.status_code == 422
    r = client.get("/admin/api/usage", params={"group_by": "'; DROP TABLE usage; --"}, headers=bearer(ADMIN))
    assert r.status_code == 422
    r = client.post("/admin/api/projects", json={"name": "dup"}, headers=bearer(ADMIN))
    r = client.post("/admin/api/projects", json={"name": "dup"}, headers=bearer(ADMIN))
    assert_error(r, 409, "conflict", "conflict_error")
