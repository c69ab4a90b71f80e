"""Tenancy on a live server with the real engine: disconnect accounting over a real streaming
HTTP client, and the plaintext of issued keys never lands in logs, the database or error bodies.

Disconnect comparison: the ledger counts the tokens the gateway received from the engine before
it cancelled generation. The client has seen ``k`` content chunks (one token each with llama.cpp);
the engine may have produced a few more that were in flight (in the socket, the SSE encoder or
the worker pipe) when the client hung up. So the check is ``k <= completion_tokens <= k + 3``,
and for a request the client reads to the end, exactly the engine's reported usage.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from openai import OpenAI
from tests.e2e.conftest import KEYED_ADMIN, MODEL
from tests.e2e.server import LiveServer

pytestmark = pytest.mark.e2e

ADMIN = KEYED_ADMIN
SLACK = 3


@pytest.fixture(scope="module")
def tenancy_server(keyed_server: LiveServer) -> LiveServer:
    """The shared keyed SmolLM2 server (tests/e2e/conftest.py); every test issues its own key."""
    return keyed_server


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def ledger_row(server: LiveServer, request_id: str) -> dict[str, object]:
    """The row appears once the server has settled the request (right after the disconnect)."""
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(f"{server.url}/admin/api/usage/requests/{request_id}", headers=admin(), timeout=10)
        if r.status_code == 200:
            row: dict[str, object] = r.json()
            return row
        assert r.status_code == 404, r.text
        assert time.monotonic() < deadline, f"no ledger row for {request_id}"
        time.sleep(0.2)


def issue_key(server: LiveServer, name: str) -> dict[str, str]:
    r = httpx.post(f"{server.url}/admin/api/keys", json={"name": name}, headers=admin(), timeout=10)
    assert r.status_code == 201, r.text
    data: dict[str, str] = r.json()
    return data


@pytest.mark.parametrize("chunks", [0, 1, 5, 50])
def test_disconnect_after_n_chunks_leaves_one_exact_row(tenancy_server: LiveServer, chunks: int) -> None:
    key = issue_key(tenancy_server, f"stream-{chunks}")["key"]
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long story about the sea, the wind and a boat."}],
        "max_tokens": 200,
        "stream": True,
        "temperature": 0,
        "seed": 1,
    }
    seen = 0
    with (
        httpx.Client(base_url=tenancy_server.url, timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers={"api-key": key}) as response,
    ):
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        if chunks:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    seen += 1
                    if seen == chunks:
                        break
        # leaving the block closes the connection mid-stream
    row = ledger_row(tenancy_server, request_id)
    assert seen == chunks, "the model ended before the client could disconnect"
    assert row["status"] == "client_disconnected"
    completion = int(str(row["completion_tokens"]))
    assert chunks <= completion <= chunks + SLACK, (chunks, completion)
    assert int(str(row["prompt_tokens"])) > 0 and row["deployment"] == MODEL


def test_complete_request_row_matches_reported_usage(tenancy_server: LiveServer) -> None:
    key = issue_key(tenancy_server, "sdk")["key"]
    with OpenAI(base_url=tenancy_server.v1, api_key=key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
        )
        completion = raw.parse()
        row = ledger_row(tenancy_server, raw.headers["x-request-id"])
        assert completion.usage is not None
        assert row["status"] == "success"
        assert row["completion_tokens"] == completion.usage.completion_tokens
        assert row["prompt_tokens"] == completion.usage.prompt_tokens
        assert row["ttft_ms"] is not None


def test_plaintext_keys_appear_nowhere(tenancy_server: LiveServer) -> None:
    created = issue_key(tenancy_server, "secret-check")
    key = created["key"]
    url = tenancy_server.url
    bodies: list[str] = []
    ok = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers={"x-api-key": key},
        timeout=60,
    )
    assert ok.status_code == 200
    bodies.append(ok.text)
    for headers in ({"Authorization": f"Bearer {key}x"}, {"api-key": key[:-1]}, {"Authorization": key}):
        r = httpx.get(f"{url}/v1/models", headers=headers, timeout=10)
        assert r.status_code == 401
        bodies.append(r.text)
    bodies.append(httpx.get(f"{url}/admin/api/keys", headers=admin(), timeout=10).text)
    httpx.post(f"{url}/admin/api/keys/{created['id']}/revoke", headers=admin(), timeout=10)
    r = httpx.get(f"{url}/v1/models", headers={"x-api-key": key}, timeout=10)
    assert r.status_code == 401
    bodies.append(r.text)
    secret_part = key.split(".", 1)[1]
    for body in bodies:
        assert key not in body and secret_part not in body
    data_dir = next(tenancy_server.log_path.parent.glob("data-*"))
    stored = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
    assert any(p.name.startswith("alize.db") for p in data_dir.rglob("*"))
    for needle in (key, secret_part, ADMIN):
        assert needle.encode() not in stored
        assert needle not in tenancy_server.log()
