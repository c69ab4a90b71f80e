"""The chat page's cookie and origin rules over HTTP: the session cookie is HttpOnly, SameSite
strict and Secure on HTTPS (or when configured), and writes from another origin are a 403
``bad_origin`` even with a valid session."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.chat.conftest import FAST_HASHER
from tests.support.apps import scripted_app

from alize.chat.accounts import UserService
from alize.config import ChatSettings, DeploymentSettings, Settings
from alize.gateway.projects import ProjectService
from alize.store.database import open_database
from alize.store.testing import migrated_sqlite

EMAIL, PASSWORD = "carol@example.com", "carol-password-1"
OWN = {"origin": "http://127.0.0.1"}


async def _with_user(database: Path) -> None:
    db = await open_database(f"sqlite+aiosqlite:///{database}")
    try:
        await ProjectService(db).create("acme")
        await UserService(db, FAST_HASHER).create("acme", EMAIL, PASSWORD)
    finally:
        await db.close()


def _client(tmp_path: Path, **chat: object) -> TestClient:
    asyncio.run(_with_user(migrated_sqlite(tmp_path / "alize.db")))
    settings = Settings(
        data_dir=tmp_path,
        default_model="echo",
        load_on_start=False,
        deployments=[DeploymentSettings(name="echo", engine="scripted", model_path=Path("echo"))],
        chat=ChatSettings(**chat),
    )
    return scripted_app(settings)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path) as c:
        yield c


def _login(client: TestClient, headers: dict[str, str]) -> httpx.Response:
    return client.post("/chat/api/login", json={"email": EMAIL, "password": PASSWORD}, headers=headers)


def test_the_session_cookie_is_httponly_and_samesite_strict(client: TestClient) -> None:
    r = _login(client, OWN)
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith("alize_chat_session=")
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http on loopback: a Secure cookie would never come back


def test_secure_cookies_when_configured(tmp_path: Path) -> None:
    with _client(tmp_path, secure_cookies=True) as client:
        r = _login(client, OWN)
        assert r.status_code == 200, r.text
        assert "; secure" in r.headers["set-cookie"].lower()


def test_login_and_writes_from_another_origin_are_403_bad_origin(client: TestClient) -> None:
    for headers in ({"origin": "https://evil.example"}, {"referer": "https://evil.example/page"}):
        refused = _login(client, headers)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "bad_origin"
    me = _login(client, OWN).json()
    csrf = {"x-csrf-token": me["csrf_token"]}
    made = client.post("/chat/api/conversations", json={"model": "echo"}, headers={**OWN, **csrf})
    assert made.status_code in (200, 201), made.text
    evil = client.post(
        "/chat/api/conversations", json={"model": "echo"}, headers={"origin": "https://evil.example", **csrf}
    )
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "bad_origin"
