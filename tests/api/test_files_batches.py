"""``/v1/files``, ``/v1/batches`` and ``/v1/batch/jobs`` in-process, over the scripted engine.

The embedded worker runs the batches, so these tests see the whole path: upload, validation,
lines through the policy pipeline at the batch price, output files, cancel, budget stop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.apps import scripted_app

from alize.config import DeploymentSettings, JobSettings, Settings


def _settings(tmp_path: Path, **jobs: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        default_model="echo",
        load_on_start=False,
        deployments=[
            DeploymentSettings(
                name=name,
                engine="scripted",
                model_path=Path(name),
                parallel=4,
                ctx_per_slot=256,
                price_input_per_million=2_000_000,
                price_output_per_million=4_000_000,
            )
            for name in ("echo", "slow")
        ],
        jobs=JobSettings(poll_s=0.05, heartbeat_s=0.1, **jobs),
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with scripted_app(_settings(tmp_path, max_file_bytes=64 * 1024, max_file_lines=100)) as c:
        yield c


def _jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _chat_line(i: int, model: str = "echo", words: str = "hello there") -> dict[str, Any]:
    return {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"{words} {i}"}], "max_tokens": 8},
    }


def _upload(client: TestClient, data: bytes, purpose: str = "batch") -> Any:
    return client.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": purpose})


def _wait(client: TestClient, batch_id: str, timeout_s: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch still {batch['status']}")


def _usage(client: TestClient, request_id: str, *, missing_ok: bool = False) -> Any:
    response = client.get(f"/admin/api/usage/requests/{request_id}")
    if missing_ok and response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.json()


def test_file_upload_list_get_content_delete(client: TestClient) -> None:
    data = _jsonl([_chat_line(i) for i in range(3)])
    created = _upload(client, data)
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["object"] == "file" and body["purpose"] == "batch" and body["bytes"] == len(data)
    assert body["num_lines"] == 3 and body["sample_type"] == "batch_request" and body["source"] == "upload"
    file_id = body["id"]
    assert client.get(f"/v1/files/{file_id}").json()["id"] == file_id
    assert client.get(f"/v1/files/{file_id}/content").content == data
    listed = client.get("/v1/files", params={"purpose": "batch"}).json()
    assert [f["id"] for f in listed["data"]] == [file_id] and listed["has_more"] is False
    assert client.get("/v1/files", params={"purpose": "fine-tune"}).json()["data"] == []
    assert client.delete(f"/v1/files/{file_id}").json() == {"id": file_id, "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{file_id}").status_code == 404


def test_bad_uploads_are_400_naming_the_line(client: TestClient, tmp_path: Path) -> None:
    bad = _jsonl([_chat_line(0)]) + b"{not json\n" + _jsonl([_chat_line(0)])
    response = _upload(client, bad)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_file"
    assert [e["line"] for e in error["errors"]] == [2, 3]
    assert "repeated" in error["errors"][1]["message"]
    assert _upload(client, b"").json()["error"]["code"] == "empty_file"
    assert _upload(client, b"x" * (65 * 1024)).status_code == 413
    too_many = _jsonl([_chat_line(i) for i in range(101)])
    assert _upload(client, too_many).json()["error"]["code"] == "too_many_lines"
    assert _upload(client, _jsonl([_chat_line(0)]), purpose="batch_output").status_code == 400
    # nothing was left behind: no file rows, no bytes but the directory itself
    assert client.get("/v1/files").json()["data"] == []
    assert [p.name for p in (tmp_path / "files").iterdir()] == []


def test_batch_runs_every_line_at_the_batch_price(client: TestClient) -> None:
    file_id = _upload(client, _jsonl([_chat_line(i) for i in range(12)])).json()["id"]
    created = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert created.status_code == 200, created.text
    batch = _wait(client, created.json()["id"])
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 12, "completed": 12, "failed": 0}
    assert batch["error_file_id"] is None and batch["in_progress_at"] and batch["finalizing_at"]
    output = client.get(f"/v1/files/{batch['output_file_id']}/content").text.splitlines()
    lines = [json.loads(line) for line in output]
    assert [line["custom_id"] for line in lines] == [f"req-{i}" for i in range(12)]
    first = lines[0]["response"]
    assert (
        first["status_code"] == 200
        and first["body"]["choices"][0]["message"]["content"].strip() == "hello there 0"
    )
    # one ledger row per line, at half the interactive price; the batch's usage is their sum
    rows = [_usage(client, line["response"]["request_id"]) for line in lines]
    assert [r["request_id"] for r in rows] == [f"{batch['id']}-{i}" for i in range(12)]
    for row in rows:
        expected = -(-(row["prompt_tokens"] * 1_000_000 + row["completion_tokens"] * 2_000_000) // 1_000_000)
        assert row["cost_micros"] == expected and row["status"] == "success"
    assert batch["usage"]["input_tokens"] == sum(r["prompt_tokens"] for r in rows)
    assert batch["usage"]["output_tokens"] == sum(r["completion_tokens"] for r in rows)


def test_batch_validation_failures_name_the_line(client: TestClient) -> None:
    lines = [_chat_line(0), _chat_line(1, model="no-such-model"), {**_chat_line(2), "url": "/v1/embeddings"}]
    file_id = _upload(client, _jsonl(lines)).json()["id"]
    batch_id = client.post(
        "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    ).json()["id"]
    batch = _wait(client, batch_id)
    assert batch["status"] == "failed"
    assert [(e["code"], e["line"]) for e in batch["errors"]["data"]] == [
        ("model_not_found", 2),
        ("mismatched_endpoint", 3),
    ]
    assert batch["output_file_id"] is None


def test_batch_input_checks_are_400(client: TestClient) -> None:
    file_id = _upload(client, _jsonl([_chat_line(0)])).json()["id"]
    post = client.post
    assert (
        post("/v1/batches", json={"input_file_id": "file-00", "endpoint": "/v1/chat/completions"}).status_code
        == 400
    )
    assert post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/images"}).status_code == 400
    bad_window = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "soon"}
    assert post("/v1/batches", json=bad_window).status_code == 400
    assert client.get("/v1/batches/batch_nope").status_code == 404


def test_cancel_keeps_finished_lines(tmp_path: Path) -> None:
    with scripted_app(_settings(tmp_path, batch_concurrency=1)) as client:
        lines = [_chat_line(i, model="slow", words="a b c d e f") for i in range(30)]
        file_id = _upload(client, _jsonl(lines)).json()["id"]
        batch_id = client.post(
            "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        ).json()["id"]
        deadline = time.monotonic() + 20
        while client.get(f"/v1/batches/{batch_id}").json()["request_counts"]["completed"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cancelling = client.post(f"/v1/batches/{batch_id}/cancel").json()
        assert cancelling["status"] in ("cancelling", "cancelled")
        batch = _wait(client, batch_id)
        assert batch["status"] == "cancelled" and batch["cancelled_at"]
        done = batch["request_counts"]["completed"]
        assert 2 <= done < 30
        kept = client.get(f"/v1/files/{batch['output_file_id']}/content").text.splitlines()
        assert len(kept) == done
        billed = [i for i in range(30) if _usage(client, f"{batch_id}-{i}", missing_ok=True)]
        assert len(billed) == done


def test_budget_stops_the_batch(tmp_path: Path) -> None:
    with scripted_app(_settings(tmp_path, batch_concurrency=1)) as client:
        file_id = _upload(client, _jsonl([_chat_line(i) for i in range(20)])).json()["id"]
        project = client.get("/admin/api/projects").json()["data"][0]["id"]
        # a line costs about 10 micro-units at the batch price (its hold: 20): room for a handful
        set_budget = client.patch(f"/admin/api/projects/{project}", json={"monthly_budget_micros": 60})
        assert set_budget.status_code == 200
        batch_id = client.post(
            "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        ).json()["id"]
        batch = _wait(client, batch_id)
        assert batch["status"] == "completed"
        counts = batch["request_counts"]
        assert 0 < counts["completed"] < 20 and counts["completed"] + counts["failed"] == 20
        assert batch["errors"]["data"][0]["code"] == "insufficient_quota"
        errors = [
            json.loads(x) for x in client.get(f"/v1/files/{batch['error_file_id']}/content").text.splitlines()
        ]
        assert {e["error"]["code"] for e in errors} == {"insufficient_quota"}
        budget = client.get(f"/admin/api/projects/{project}").json()["budget"]
        assert 0 < budget["spent_micros"] <= 60 and budget["reserved_micros"] == 0


def test_other_project_gets_404(client: TestClient) -> None:
    created = client.post("/admin/api/keys", json={"name": "admin", "scopes": ["admin"]})
    admin = {"Authorization": f"Bearer {created.json()['key']}"}
    other = client.post("/admin/api/projects", json={"name": "other"}, headers=admin).json()["id"]
    theirs = client.post("/admin/api/keys", json={"name": "k", "project_id": other}, headers=admin).json()[
        "key"
    ]
    file_id = client.post(
        "/v1/files",
        files={"file": ("a.jsonl", _jsonl([_chat_line(0)]))},
        data={"purpose": "batch"},
        headers=admin,
    ).json()["id"]
    them = {"Authorization": f"Bearer {theirs}"}
    assert client.get(f"/v1/files/{file_id}", headers=them).status_code == 404
    assert client.get(f"/v1/files/{file_id}/content", headers=them).status_code == 404
    assert client.delete(f"/v1/files/{file_id}", headers=them).status_code == 404
    refused = client.post(
        "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}, headers=them
    )
    assert refused.status_code == 400


def test_mistral_inline_batch(client: TestClient) -> None:
    requests = [
        {"custom_id": str(i), "body": {"messages": [{"role": "user", "content": f"hi {i}"}]}}
        for i in range(4)
    ]
    created = client.post(
        "/v1/batch/jobs", json={"requests": requests, "endpoint": "/v1/chat/completions", "model": "echo"}
    )
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["status"] == "QUEUED" and job["total_requests"] == 4
    _wait(client, job["id"])
    done = client.get(f"/v1/batch/jobs/{job['id']}").json()
    assert done["status"] == "SUCCESS" and done["succeeded_requests"] == 4
    # inline requests: the results are on the job too, in input order
    assert [o["custom_id"] for o in done["outputs"]] == ["0", "1", "2", "3"]
    assert done["outputs"][2]["response"]["body"]["choices"][0]["message"]["content"].strip() == "hi 2"
    listed = client.get("/v1/batch/jobs", params={"status": "SUCCESS"}).json()
    assert listed["total"] == 1 and listed["data"][0]["id"] == job["id"]
