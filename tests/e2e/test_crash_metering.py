"""kill -9 of the gateway during 20 concurrent streamed requests (issue 25): after a restart,
every request whose client got the final chunk has exactly one usage row, with the tokens the
client was told, and the budget holds exactly what the rows cost (the row and its charge commit
together; the holds of the requests cut off are released at start-up, not charged)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import live_server

pytestmark = pytest.mark.e2e

ADMIN = "e2e-crash-metering-admin-key-0123456789"
REQUESTS = 20


@dataclass
class Outcome:
    request_id: str | None = None
    done: bool = False  # got the final chunk ([DONE], after the usage chunk)
    completion_tokens: int | None = None


def _admin(url: str, method: str, path: str, body: dict[str, object] | None = None) -> httpx.Response:
    return httpx.request(
        method, f"{url}/admin/api{path}", json=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
    )


def _stream(url: str, key: str, outcome: Outcome, started: threading.Event) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a long story about the sea."}],
        "max_tokens": 24,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started.wait()
    try:
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=300,
        ) as r:
            outcome.request_id = r.headers.get("x-request-id")
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    outcome.done = True
                elif line.startswith("data: "):
                    usage = json.loads(line[6:]).get("usage")
                    if usage:
                        outcome.completion_tokens = usage["completion_tokens"]
    except httpx.HTTPError:
        pass  # the server is killed under it


def test_every_request_that_got_its_final_chunk_has_exactly_one_row_after_a_kill(tmp_path: Path) -> None:
    env = {
        "ALIZE_DATA_DIR": str(tmp_path / "data"),
        "ALIZE_ADMIN_KEY": ADMIN,
        "ALIZE_DEPLOYMENTS": f'[{{"name": "{MODEL}"}}]',
        "ALIZE_CHAT__ENABLED": "false",
        "ALIZE_ENGINE__PARALLEL": "4",
        "ALIZE_ENGINE__CTX_PER_SLOT": "512",
        "ALIZE_LIMITS__QUEUE_TIMEOUT_S": "300",
    }
    outcomes = [Outcome() for _ in range(REQUESTS)]
    with live_server(tmp_path, env) as server:
        r = _admin(
            server.url, "POST", "/projects", {"name": "p", "monthly_budget_micros": 10**9, "rpm": 1000}
        )
        assert r.status_code == 201, r.text
        project = r.json()["id"]
        r = _admin(server.url, "POST", "/keys", {"name": "k", "project_id": project, "rpm": 1000})
        key = r.json()["key"]
        r = _admin(
            server.url,
            "PATCH",
            f"/models/{MODEL}",
            {"price_input_per_million": 1_000_000, "price_output_per_million": 2_000_000},
        )
        assert r.status_code == 200, r.text
        go = threading.Event()
        clients = [
            threading.Thread(target=_stream, args=(server.url, key, o, go), daemon=True) for o in outcomes
        ]
        for client in clients:
            client.start()
        go.set()
        deadline = time.monotonic() + 240
        # kill once some requests are over and others are still streaming or waiting for a slot
        while sum(o.done for o in outcomes) < REQUESTS // 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        for client in clients:
            client.join(30)
    finished = [o for o in outcomes if o.done]
    cut = [o for o in outcomes if not o.done]
    assert finished and cut, f"{len(finished)} finished: the kill must come mid-way"
    with live_server(tmp_path, env) as restarted:
        for outcome in finished:
            assert outcome.request_id is not None
            r = _admin(restarted.url, "GET", f"/usage/requests/{outcome.request_id}")
            assert r.status_code == 200, f"no row for {outcome.request_id}, which got its final chunk"
            row = r.json()
            assert row["status"] == "success"
            assert row["completion_tokens"] == outcome.completion_tokens == 24
        rows = {
            o.request_id: _admin(restarted.url, "GET", f"/usage/requests/{o.request_id}").status_code
            for o in cut
            if o.request_id is not None
        }
        totals = _admin(restarted.url, "GET", f"/usage?group_by=project&project_id={project}").json()["data"]
        budget = _admin(restarted.url, "GET", f"/projects/{project}").json()["budget"]
    [total] = totals
    # exactly one row each: the finished ones, and no more than one for each request cut off
    assert total["requests"] == len(finished) + sum(status == 200 for status in rows.values())
    assert budget["reserved_micros"] == 0  # the holds of the requests cut off: released
    assert budget["spent_micros"] == total["cost_micros"]  # each row charged, once
