"""Chat users for administrators over HTTP (GDPR): list, disable, erase with a report; the
user's own JSON export from the chat page; project admins see only their project."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.api.test_admin_tenancy import tenant
from tests.api.test_auth import ADMIN, assert_error, bearer, make_settings
from tests.chat.conftest import FAST_HASHER
from tests.support.apps import scripted_app

ORIGIN = {"origin": "http://127.0.0.1"}
MARK = "Quillowmere-5521"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with scripted_app(make_settings(tmp_path, admin_key=ADMIN)) as c:
        c.app.state.services.chat.users.passwords.hasher = FAST_HASHER  # type: ignore[attr-defined]
        yield c


def _user(client: TestClient, project: str, email: str, key: str = ADMIN) -> dict[str, object]:
    r = client.post(
        "/admin/api/chat/users",
        json={"project_id": project, "email": email, "password": "a-long-password"},
        headers=bearer(key),
    )
    assert r.status_code == 201, r.text
    body: dict[str, object] = r.json()
    return body


def _chat_as(client: TestClient, email: str) -> dict[str, str]:
    r = client.post("/chat/api/login", json={"email": email, "password": "a-long-password"}, headers=ORIGIN)
    assert r.status_code == 200, r.text
    headers = {**ORIGIN, "x-csrf-token": r.json()["csrf_token"]}
    conversation = client.post(
        "/chat/api/conversations", json={"model": "echo", "title": MARK}, headers=headers
    ).json()
    reply = client.post(
        f"/chat/api/conversations/{conversation['id']}/messages",
        json={"content": f"hello {MARK}"},
        headers=headers,
    )
    assert reply.status_code == 200 and '"type": "done"' in reply.text.replace('":"', '": "'), reply.text
    return headers


def test_list_disable_export_and_erase(client: TestClient) -> None:
    project, project_admin, _ = tenant(client, "acme")
    other, other_admin, _ = tenant(client, "globex")
    ana = _user(client, project, "ana@example.org")
    ben = _user(client, other, "ben@example.org", key=other_admin)
    headers = _chat_as(client, "ana@example.org")

    # each admin sees their own project's users; another project's is 404
    listed = client.get("/admin/api/chat/users", headers=bearer(project_admin)).json()["data"]
    assert [u["email"] for u in listed] == ["ana@example.org"]
    assert {u["id"] for u in client.get("/admin/api/chat/users", headers=bearer(ADMIN)).json()["data"]} == {
        ana["id"],
        ben["id"],
    }
    r = client.delete(f"/admin/api/chat/users/{ben['id']}", headers=bearer(project_admin))
    assert_error(r, 404, "not_found", "not_found_error")

    # the user downloads their data from the chat page
    export = client.get("/chat/api/me/export")
    assert export.status_code == 200
    assert "attachment" in export.headers["content-disposition"]
    data = json.loads(export.text)
    assert data["user"]["email"] == "ana@example.org"
    assert data["conversations"][0]["messages"][0]["content"] == f"hello {MARK}"
    assert data["usage"] and data["usage"][0]["completion_tokens"] > 0

    # disabling logs them out at once
    r = client.patch(
        f"/admin/api/chat/users/{ana['id']}", json={"disabled": True}, headers=bearer(project_admin)
    )
    assert r.status_code == 200 and r.json()["disabled_at"]
    assert client.get("/chat/api/me").status_code == 401
    assert (
        client.post(
            "/chat/api/login",
            json={"email": "ana@example.org", "password": "a-long-password"},
            headers=ORIGIN,
        ).status_code
        == 401
    )
    client.patch(
        f"/admin/api/chat/users/{ana['id']}", json={"disabled": False}, headers=bearer(project_admin)
    )

    usage_before = client.get(
        "/admin/api/usage", params={"project_id": project}, headers=bearer(ADMIN)
    ).json()
    r = client.delete(f"/admin/api/chat/users/{ana['id']}", headers=bearer(project_admin))
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["deleted"] is True and report["project_id"] == project
    assert report["removed"]["conversations"] == 1 and report["removed"]["messages"] == 2
    assert report["usage_rows_pseudonymised"] == 1 and report["pseudonym"].startswith("erased:")
    usage_after = client.get("/admin/api/usage", params={"project_id": project}, headers=bearer(ADMIN)).json()
    assert usage_after["data"] == usage_before["data"]
    assert client.get(f"/admin/api/chat/users/{ana['id']}", headers=bearer(ADMIN)).status_code == 404
    assert client.get("/chat/api/me/export").status_code == 401
    assert headers  # the old session's CSRF token opens nothing either
    audit = client.get("/admin/api/audit", headers=bearer(ADMIN)).json()["data"]
    actions = [(e["action"], e["target"]) for e in audit]
    for action in ("chat_user.create", "chat_user.disable", "chat_user.enable", "chat_user.erase"):
        assert (action, ana["id"]) in actions
    assert "ana@example.org" not in json.dumps(audit) and MARK not in json.dumps(audit)
    assert client.get("/admin/api/chat/users", headers=bearer(project_admin)).json()["data"] == []


def test_an_inference_key_cannot_manage_users(client: TestClient) -> None:
    project, _, user_key = tenant(client, "acme")
    r = client.get("/admin/api/chat/users", headers=bearer(user_key))
    assert r.status_code == 403
    r = client.post(
        "/admin/api/chat/users",
        json={"project_id": project, "email": "x@example.org", "password": "a-long-password", "admin": True},
        headers=bearer(ADMIN),
    )
    assert_error(r, 422, "validation_error", "invalid_request_error")
