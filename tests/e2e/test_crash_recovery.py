"""kill -9 of the gateway mid-request does not leave the request's budget hold behind (issue 17,
fault 2): the restarted server releases it at start-up, before it serves anyone."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import live_server

pytestmark = pytest.mark.e2e

ADMIN = "e2e-crash-admin-key-0123456789abcdef"


def _admin(url: str, method: str, path: str, body: dict[str, object] | None = None) -> httpx.Response:
    r = httpx.request(
        method, f"{url}/admin/api{path}", json=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
    )
    assert r.status_code < 300, r.text
    return r


def test_a_hold_left_by_a_killed_gateway_is_released_at_restart(tmp_path: Path) -> None:
    env = {
        "ALIZE_DATA_DIR": str(tmp_path / "data"),
        "ALIZE_ADMIN_KEY": ADMIN,
        "ALIZE_DEPLOYMENTS": f'[{{"name": "{MODEL}"}}]',
        "ALIZE_ENGINE__PARALLEL": "1",
        "ALIZE_ENGINE__CTX_PER_SLOT": "1024",
    }
    with live_server(tmp_path, env) as server:
        project = _admin(
            server.url, "POST", "/projects", {"name": "p", "monthly_budget_micros": 10**9}
        ).json()
        key = _admin(server.url, "POST", "/keys", {"name": "k", "project_id": project["id"]}).json()["key"]
        _admin(server.url, "PATCH", f"/models/{MODEL}", {"price_output_per_million": 1_000_000})
        streaming = threading.Event()
        statuses: list[int] = []

        def chat() -> None:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Count from one to five hundred in words."}],
                "max_tokens": 512,
                # The hold must still be in flight when the test reads it: without this the model
                # may end its reply after a few tokens and settle the hold first (seen in CI).
                "ignore_eos": True,
                "stream": True,
            }
            try:
                with httpx.stream(
                    "POST",
                    f"{server.v1}/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=120,
                ) as r:
                    statuses.append(r.status_code)
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            streaming.set()
            except httpx.HTTPError:
                pass  # the server is killed under it

        client = threading.Thread(target=chat)
        client.start()
        assert streaming.wait(120), statuses
        assert statuses == [200]
        held = _admin(server.url, "GET", f"/projects/{project['id']}").json()["budget"]
        assert held["reserved_micros"] > 0  # the worst case of the request in flight
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        client.join(30)
    with live_server(tmp_path, env) as restarted:
        budget = _admin(restarted.url, "GET", f"/projects/{project['id']}").json()["budget"]
        assert budget["reserved_micros"] == 0
        assert budget["spent_micros"] == 0  # released, not charged
        assert "released 1 budget hold" in restarted.log()
