"""The Host check (issue 17, fault 5): DNS rebinding cannot reach the platform through a foreign
host name, and the chat page's Origin check compares against the names the server answers to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.api.test_auth import ADMIN, bearer, make_settings
from tests.api.test_errors import assert_error
from tests.support.apps import scripted_app

from alize.api.hosts import HostPolicy, host_name, origin_allowed

REBIND = "rebind.attacker.example"


@pytest.fixture
def open_client(tmp_path: Path) -> Iterator[TestClient]:
    with scripted_app(make_settings(tmp_path)) as c:
        yield c


@pytest.mark.parametrize("path", ["/admin/api/projects", "/v1/models", "/", "/catalog", "/openapi.json"])
def test_a_foreign_host_in_open_mode_reaches_nothing(open_client: TestClient, path: str) -> None:
    r = open_client.get(path, headers={"host": REBIND})
    assert_error(r, 400, "invalid_host", "invalid_request_error")
    assert REBIND in r.json()["error"]["message"]


def test_a_rebinding_page_cannot_log_in_to_the_chat(open_client: TestClient) -> None:
    r = open_client.post(
        "/chat/api/login",
        json={"email": "a@b.c", "password": "whatever-it-is"},
        headers={"host": f"{REBIND}:8000", "origin": f"http://{REBIND}:8000"},
    )
    assert_error(r, 400, "invalid_host", "invalid_request_error")


@pytest.mark.parametrize(
    "host", ["localhost:8000", "127.0.0.1", "127.0.0.2:9", "[::1]:8000", "app.localhost"]
)
def test_loopback_names_are_always_served(open_client: TestClient, host: str) -> None:
    assert open_client.get("/admin/api/projects", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", [REBIND, "", "a b", "user@127.0.0.1", "127.0.0.1:port"])
def test_probes_answer_whatever_the_name_and_odd_hosts_are_refused(
    open_client: TestClient, host: str
) -> None:
    assert open_client.get("/health", headers={"host": host}).status_code == 200
    assert open_client.get("/v1/models", headers={"host": host}).status_code == 400


def test_configured_names_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, admin_key=ADMIN, allowed_hosts=["chat.example.eu", ".corp.example"])
    with scripted_app(settings) as c:
        for host in ("chat.example.eu", "corp.example", "api.corp.example:443", "localhost"):
            r = c.get("/admin/api/projects", headers={"host": host, **bearer(ADMIN)})
            assert r.status_code == 200, (host, r.text)
        for host in (REBIND, "evilcorp.example", "chat.example.eu.evil"):
            r = c.get("/admin/api/projects", headers={"host": host, **bearer(ADMIN)})
            assert_error(r, 400, "invalid_host", "invalid_request_error")


def test_once_keys_exist_an_empty_list_serves_any_name_behind_the_key(tmp_path: Path) -> None:
    with scripted_app(make_settings(tmp_path, admin_key=ADMIN)) as c:
        assert c.get("/admin/api/projects", headers={"host": "gw.internal"}).status_code == 401
        assert (
            c.get("/admin/api/projects", headers={"host": "gw.internal", **bearer(ADMIN)}).status_code == 200
        )


def test_host_names_are_parsed_strictly() -> None:
    assert host_name("Example.EU:8000") == "example.eu"
    assert host_name("[::1]:80") == "::1"
    assert host_name("::1") == "::1"
    assert host_name("") is None
    assert host_name("a@b") is None
    assert host_name("host:http") is None


def test_origin_is_compared_against_allowed_names_not_the_bare_host_header() -> None:
    empty = HostPolicy([])
    # the rebinding page: its Origin equals its Host, which the old check accepted
    assert not origin_allowed(f"http://{REBIND}", REBIND, empty, keys_exist=False)
    assert origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000", empty, keys_exist=False)
    assert not origin_allowed("http://localhost:8000", "127.0.0.1:8000", empty, keys_exist=False)
    configured = HostPolicy(["chat.example.eu"])
    assert origin_allowed("https://chat.example.eu", "chat.example.eu", configured, keys_exist=True)
    assert not origin_allowed(f"https://{REBIND}", REBIND, configured, keys_exist=True)
    assert not origin_allowed("javascript://chat.example.eu", "chat.example.eu", configured, keys_exist=True)
    assert origin_allowed(
        "https://app.example.eu", "x", configured, keys_exist=True, extra=["https://app.example.eu/"]
    )
