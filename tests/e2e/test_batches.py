"""Batches on the real llama.cpp engine (SmolLM2), driven by the official ``openai`` and
``mistralai`` SDKs, and a worker killed with SIGKILL mid-batch whose job another one finishes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

ADMIN = "e2e-batch-admin-key-0123456789abcdef"
PRICES = {"price_input_per_million": 2_000_000, "price_output_per_million": 4_000_000}


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "ALIZE_DATA_DIR": str(data_dir),
        "ALIZE_ADMIN_KEY": ADMIN,
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": MODEL, **PRICES}]),
        "ALIZE_ENGINE__PARALLEL": "4",
        "ALIZE_ENGINE__CTX_PER_SLOT": "1024",
        "ALIZE_JOBS__POLL_S": "0.2",
        "ALIZE_JOBS__HEARTBEAT_S": "1",
        "ALIZE_JOBS__LEASE_S": "4",
        **extra,
    }


def _admin(server: LiveServer, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    r = httpx.request(
        method,
        f"{server.url}/admin/api{path}",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=60,
    )
    assert r.status_code < 300, r.text
    return r.json()


def _lines(n: int) -> bytes:
    return "".join(
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Say the number {i}."}],
                    "max_tokens": 6,
                    "temperature": 0,
                },
            }
        )
        + "\n"
        for i in range(n)
    ).encode()


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    tmp = tmp_path_factory.mktemp("batches")
    with live_server(tmp, _env(tmp / "data")) as server:
        project = _admin(server, "POST", "/projects", {"name": "batch-e2e"})
        key = _admin(server, "POST", "/keys", {"name": "k", "project_id": project["id"]})["key"]
        yield server, key


def test_openai_sdk_fifty_lines_in_order_at_the_batch_price(batch_server: tuple[LiveServer, str]) -> None:
    from openai import OpenAI

    server, key = batch_server
    client = OpenAI(base_url=server.v1, api_key=key)
    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(_lines(50))), purpose="batch")
    assert uploaded.bytes == len(_lines(50)) and uploaded.purpose == "batch"
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "e2e"},
    )
    assert batch.status in ("validating", "in_progress")
    deadline = time.monotonic() + 600
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch.errors
    assert batch.request_counts is not None and batch.request_counts.completed == 50
    assert batch.request_counts.failed == 0 and batch.error_file_id is None
    assert batch.metadata == {"run": "e2e"}
    assert batch.output_file_id is not None
    output = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == [f"line-{i}" for i in range(50)]
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in output)
    assert all(o["response"]["body"]["choices"][0]["message"]["content"] for o in output)
    # one ledger row per line, at half the interactive prices; the batch's usage is their sum
    rows = [_admin(server, "GET", f"/usage/requests/{o['response']['request_id']}") for o in output]
    assert len({r["request_id"] for r in rows}) == 50
    for row in rows:
        assert row["status"] == "success"
        assert row["cost_micros"] == -(
            -(row["prompt_tokens"] * 1_000_000 + row["completion_tokens"] * 2_000_000) // 1_000_000
        )
    assert batch.usage is not None
    assert batch.usage.input_tokens == sum(r["prompt_tokens"] for r in rows)
    assert batch.usage.output_tokens == sum(r["completion_tokens"] for r in rows)
    listed = client.batches.list(limit=5)
    assert batch.id in [b.id for b in listed.data]
    assert [f.id for f in client.files.list(purpose="batch_output").data] == [batch.output_file_id]


def test_mistral_sdk_batch_job(batch_server: tuple[LiveServer, str]) -> None:
    from mistralai.client import Mistral

    server, key = batch_server
    client = Mistral(api_key=key, server_url=server.url)
    lines = "".join(
        json.dumps(
            {
                "custom_id": str(i),
                "body": {"messages": [{"role": "user", "content": f"Hi {i}"}], "max_tokens": 4},
            }
        )
        + "\n"
        for i in range(5)
    ).encode()
    uploaded = client.files.upload(file={"file_name": "in.jsonl", "content": lines}, purpose="batch")
    job = client.batch.jobs.create(input_files=[uploaded.id], endpoint="/v1/chat/completions", model=MODEL)
    assert job.status == "QUEUED" and job.total_requests == 5
    deadline = time.monotonic() + 300
    while job.status in ("QUEUED", "RUNNING"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
        job = client.batch.jobs.get(job_id=job.id)
    assert job.status == "SUCCESS" and job.succeeded_requests == 5 and job.output_file
    content = client.files.download(file_id=job.output_file).read().decode()
    assert [json.loads(line)["custom_id"] for line in content.splitlines()] == [str(i) for i in range(5)]
    assert job.id in [j.id for j in client.batch.jobs.list(status=["SUCCESS"]).data]


def _worker(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    full.update(env, PYTHONUNBUFFERED="1")
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "alize.cli.main", "worker", *extra],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_a_worker_killed_mid_batch_is_resumed_by_another(tmp_path: Path) -> None:
    """SIGKILL the worker (and its engine) mid-batch: a second worker finishes the batch, no line
    is missing or repeated, every line has exactly one usage row, and the lines finished before
    the kill are not run again."""
    env = _env(tmp_path / "data", ALIZE_JOBS__EMBEDDED_WORKER="false", ALIZE_JOBS__BATCH_CONCURRENCY="2")
    total = 40
    with live_server(tmp_path, env) as server:
        project = _admin(server, "POST", "/projects", {"name": "kill"})
        key = _admin(server, "POST", "/keys", {"name": "k", "project_id": project["id"]})["key"]
        auth = {"Authorization": f"Bearer {key}"}
        uploaded = httpx.post(
            f"{server.v1}/files",
            files={"file": ("in.jsonl", _lines(total))},
            data={"purpose": "batch"},
            headers=auth,
            timeout=60,
        ).json()
        batch_id = httpx.post(
            f"{server.v1}/batches",
            json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions"},
            headers=auth,
            timeout=60,
        ).json()["id"]

        def batch() -> Any:
            return httpx.get(f"{server.v1}/batches/{batch_id}", headers=auth, timeout=60).json()

        first = _worker(env, tmp_path / "worker-1.log")
        deadline = time.monotonic() + 300
        try:
            while batch()["request_counts"]["completed"] < 5:
                assert first.poll() is None, (tmp_path / "worker-1.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
        killed_at = datetime.now().astimezone()
        done_at_kill = batch()["request_counts"]["completed"]
        assert 5 <= done_at_kill < total, "the batch should still be running at the kill"
        assert batch()["status"] == "in_progress"

        second = _worker(env, tmp_path / "worker-2.log", "--exit-when-idle", "3")
        try:
            assert second.wait(300) == 0
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
        log = (tmp_path / "worker-2.log").read_text()
        assert f"resuming, {done_at_kill} of {total} lines already done" in log, log[-2000:]
        final = batch()
        assert final["status"] == "completed", final
        assert final["request_counts"] == {"total": total, "completed": total, "failed": 0}
        content = httpx.get(
            f"{server.v1}/files/{final['output_file_id']}/content", headers=auth, timeout=60
        ).text
        ids = [json.loads(line)["custom_id"] for line in content.splitlines()]
        assert ids == [f"line-{i}" for i in range(total)]
        rows = [_admin(server, "GET", f"/usage/requests/{batch_id}-{i}") for i in range(total)]
        assert all(r["status"] == "success" for r in rows)
        # the lines the first worker finished were billed once, before the kill, and never again
        after = [r for r in rows if datetime.fromisoformat(r["created_at"]) > killed_at]
        assert len(after) <= total - done_at_kill
