"""A client that drops a non-streamed request frees its slot at once and the request is metered
as ``client_disconnected`` (issue 17, fault 1); before, it ran to ``max_tokens`` as ``success``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.apps import scripted_client

WORDS = " ".join(f"w{i}" for i in range(100))  # 100 tokens at 50 ms each: 5 s if not cut


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with scripted_client(tmp_path, parallel=1) as c:
        yield c


async def _dropped_after(
    app: Any, path: str, body: dict[str, object], seconds: float
) -> list[dict[str, Any]]:
    """Call the app as a client that goes away ``seconds`` after sending the request."""
    payload = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "root_path": "",
        "app": app,
    }
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": payload, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(seconds)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "slow", "messages": [{"role": "user", "content": WORDS}]}),
        ("/v1/completions", {"model": "slow", "prompt": WORDS}),
    ],
)
def test_a_dropped_non_streamed_request_stops_and_is_metered_as_disconnected(
    client: TestClient, path: str, body: dict[str, object]
) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    assert client.portal is not None
    started = time.monotonic()
    client.portal.call(_dropped_after, client.app, path, {**body, "max_tokens": 100}, 0.3)
    assert time.monotonic() - started < 3  # not the 5 s the whole reply takes
    deployment = services.deployments.get("slow")
    assert not deployment.busy  # the slot is free at once
    now = datetime.now(UTC)
    project = client.portal.call(services.tenancy.default_project_id)
    rows = client.portal.call(
        services.tenancy.metering.rows, project, now - timedelta(minutes=1), now + timedelta(minutes=1)
    )
    [row] = rows
    assert row.status == "client_disconnected"
    assert 0 < row.completion_tokens < 100
    # the next request gets the one slot straight away
    r = client.post(
        "/v1/chat/completions",
        json={"model": "slow", "messages": [{"role": "user", "content": "a b"}], "max_tokens": 2},
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
