"""Authentication over HTTP: which routes need a key, the 401/403/404 shapes, odd credentials,
constant-time comparison, open mode, and the refusal to serve a public address without keys."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.support.apps import local_client
from tests.support.scripted_engine import ScriptedEngine

from alize.api.app import create_app
from alize.api.auth import extract_api_key
from alize.config import DeploymentSettings, Settings
from alize.engines.registry import EngineRegistry
from alize.gateway import auth as auth_module
from alize.gateway.tenancy import UnsafeBindError

ADMIN = "bootstrap-admin-key-0123456789abcdef"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        default_model="echo",
        load_on_start=False,
        deployments=[
            DeploymentSettings(name=s, engine="scripted", model_path=Path(s), parallel=4, ctx_per_slot=256)
            for s in ("echo", "slow")
        ],
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def registry() -> EngineRegistry:
    registry = EngineRegistry(load_entry_points=False)
    registry.register("scripted", ScriptedEngine)
    return registry


@pytest.fixture
def client(tmp_path: Path, registry: EngineRegistry) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path, admin_key=ADMIN), registry=registry)
    with local_client(app) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key(client: TestClient, **body: object) -> dict[str, object]:
    r = client.post("/admin/api/keys", json={"name": "k", **body}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    data: dict[str, object] = r.json()
    return data


def assert_error(response: object, status: int, code: str, type_: str) -> None:
    r = response  # httpx.Response
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert (body["error"]["code"], body["error"]["type"]) == (code, type_)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("GET", "/v1/models/echo"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/models/chat/completions"),
        ("GET", "/models/info"),
        ("GET", "/admin/api/keys"),
        ("GET", "/admin/api/usage"),
        ("GET", "/admin/anything-not-routed"),
        ("GET", "/v1/not-a-route"),
        ("GET", "/catalog"),  # it lists deployments and prices (issue 17, fault 7)
    ],
)
def test_protected_routes_answer_401_without_a_key(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path, json=CHAT if method == "POST" else None)
    assert_error(r, 401, "invalid_api_key", "authentication_error")


def test_health_stays_open(client: TestClient) -> None:
    assert client.get("/health").status_code == 200


def test_the_catalog_page_opens_with_a_key(client: TestClient) -> None:
    r = client.get("/catalog", headers=bearer(str(new_key(client)["key"])))
    assert r.status_code == 200 and "<html" in r.text.lower()


@pytest.mark.parametrize("header", ["Authorization", "api-key", "x-api-key"])
def test_key_accepted_in_each_header(client: TestClient, header: str) -> None:
    key = str(new_key(client)["key"])
    value = f"Bearer {key}" if header == "Authorization" else key
    r = client.post("/v1/chat/completions", json=CHAT, headers={header: value})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "hello there "  # the echo engine's reply


@pytest.mark.parametrize(
    "value",
    [
        "' OR '1'='1",
        "alz-aaaaaaaa.' OR 1=1; DROP TABLE api_keys; --",
        "alz-abcdefgh.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "x" * 10_000,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer \t ",
        "Bearer ééééééééééééééééééé",
        "Bearer a b c d e f g h i j k l m n o p",
        "Bearer %00%00%00%00%00%00%00%00%00%00",
        "Bearer " + ADMIN[:-1],
    ],
)
def test_odd_or_hostile_credentials_get_401(client: TestClient, value: str) -> None:
    for header in ("Authorization", "api-key", "x-api-key"):
        sent = value if header == "Authorization" or not value.startswith("Bearer") else value[7:]
        r = client.get("/v1/models", headers={header: sent.encode("utf-8")})  # type: ignore[dict-item]
        assert_error(r, 401, "invalid_api_key", "authentication_error")
    assert client.get("/v1/models", headers=bearer(ADMIN)).status_code == 200  # the table survived


def test_raw_bytes_in_the_key_header_get_401(client: TestClient) -> None:
    r = client.get(
        "/v1/models", headers=[(b"authorization", b"Bearer \xff\xfe\x80abc"), (b"x-api-key", b"\xc3")]
    )
    assert_error(r, 401, "invalid_api_key", "authentication_error")


def test_keys_are_compared_in_constant_time(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    key = str(new_key(client)["key"])
    calls.clear()
    assert client.get("/v1/models", headers=bearer(key)).status_code == 200
    # one comparison, of the stored hash with the presented key's: equal, and never the key itself
    assert len(calls) == 1, "authentication must compare hashes with hmac.compare_digest"
    (stored, presented) = calls[0]
    assert stored == presented and key not in (stored, presented)
    calls.clear()
    assert client.get("/v1/models", headers=bearer(key[:-2] + "AA")).status_code == 401
    assert len(calls) == 1 and calls[0][0] != calls[0][1]


def test_inference_key_cannot_reach_admin_routes(client: TestClient) -> None:
    key = str(new_key(client)["key"])
    r = client.get("/admin/api/keys", headers=bearer(key))
    assert_error(r, 403, "admin_required", "permission_error")


def test_allow_list_gives_403_and_filters_models(client: TestClient) -> None:
    key = str(new_key(client, allowed_deployments=["slow"])["key"])
    r = client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    assert_error(r, 403, "deployment_not_allowed", "permission_error")
    assert_error(
        client.get("/v1/models/echo", headers=bearer(key)), 403, "deployment_not_allowed", "permission_error"
    )
    ids = [m["id"] for m in client.get("/v1/models", headers=bearer(key)).json()["data"]]
    assert ids == ["slow"]


def test_revoked_and_rotated_keys_stop_working(client: TestClient) -> None:
    created = new_key(client)
    key, key_id = str(created["key"]), str(created["id"])
    rotated = client.post(f"/admin/api/keys/{key_id}/rotate", headers=bearer(ADMIN)).json()
    assert_error(
        client.get("/v1/models", headers=bearer(key)), 401, "api_key_revoked", "authentication_error"
    )
    new = str(rotated["key"])
    assert client.get("/v1/models", headers=bearer(new)).status_code == 200
    client.post(f"/admin/api/keys/{rotated['id']}/revoke", headers=bearer(ADMIN))
    assert client.get("/v1/models", headers=bearer(new)).status_code == 401


def test_open_mode_until_a_key_exists(tmp_path: Path, registry: EngineRegistry) -> None:
    with local_client(create_app(make_settings(tmp_path), registry=registry)) as c:
        r = c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text
        created = c.post("/admin/api/keys", json={"name": "first", "scopes": ["admin", "inference"]})
        assert created.status_code == 201
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 401
        key = created.json()["key"]
        usage = c.get("/admin/api/usage", params={"group_by": "project"}, headers=bearer(key)).json()
        assert sum(g["requests"] for g in usage["data"]) == 1  # the open-mode request was metered


def test_public_bind_without_keys_is_refused(tmp_path: Path, registry: EngineRegistry) -> None:
    app = create_app(make_settings(tmp_path, host="0.0.0.0"), registry=registry)
    with pytest.raises(UnsafeBindError, match="ALIZE_ADMIN_KEY"), local_client(app):
        pass
    app = create_app(make_settings(tmp_path, host="0.0.0.0", admin_key=ADMIN), registry=registry)
    with local_client(app) as c:
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": "Bearer alz-abc.def"}, "alz-abc.def"),
        ({"authorization": "bearer   alz-abc.def  "}, "alz-abc.def"),
        ({"api-key": "alz-abc.def"}, "alz-abc.def"),
        ({"X-API-Key": "alz-abc.def"}, "alz-abc.def"),
        ({"Authorization": "Basic dXNlcjpwYXNz", "api-key": "k1"}, "k1"),
        ({"Authorization": "Bearer a", "x-api-key": "b"}, "a"),
        ({}, None),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": "Bearer '; DROP TABLE api_keys; --"}, None),
        ({"api-key": "' OR '1'='1"}, None),
        ({"api-key": "x" * 100_000}, None),
        ({"api-key": "clé"}, None),
        ({"api-key": "abc\x00def"}, None),
        ({"api-key": "abc\r\nX-Injected: 1"}, None),
        ({"api-key": "a b"}, None),
    ],
)
def test_extract_api_key(headers: dict[str, str], expected: str | None) -> None:
    assert extract_api_key(headers) == expected


def test_extract_api_key_never_raises_on_odd_mappings() -> None:
    assert extract_api_key({b"api-key": b"x"}) is None  # type: ignore[dict-item]
    assert extract_api_key({"api-key": None}) is None  # type: ignore[dict-item]
