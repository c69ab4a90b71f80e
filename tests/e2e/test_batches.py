"""Batches on the real llama.cpp engine (SmolLM2), driven by the official ``openai`` and
``mistralai`` SDKs, and a worker killed with SIGKILL mid-batch whose job another one finishes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import LiveServer, live_server

from alize.store.testing import postgres_schema_url, require_postgres

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
    with OpenAI(base_url=server.v1, api_key=key) as client:
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
    with Mistral(api_key=key, server_url=server.url) as client:
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
        job = client.batch.jobs.create(
            input_files=[uploaded.id], endpoint="/v1/chat/completions", model=MODEL
        )
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


@contextmanager
def _database_url(backend: str) -> Iterator[dict[str, str]]:
    """Nothing for SQLite (the data directory's file); a fresh PostgreSQL schema otherwise."""
    if backend == "sqlite":
        yield {}
        return
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(require_postgres())
        schema = postgres_schema_url()
        url = loop.run_until_complete(schema.__aenter__())
        try:
            yield {"ALIZE_DATABASE_URL": url.render_as_string(hide_password=False)}
        finally:
            loop.run_until_complete(schema.__aexit__(None, None, None))
    finally:
        loop.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_worker_killed_mid_batch_is_resumed_by_another(tmp_path: Path, backend: str) -> None:
    """SIGKILL the worker (and its engine) mid-batch: a second worker finishes the batch, no line
    is missing or repeated, every line has exactly one usage row, and the lines finished before
    the kill are not run again. On PostgreSQL the claims are ``FOR UPDATE SKIP LOCKED``."""
    with _database_url(backend) as database:
        _kill_and_resume(tmp_path, database)


def _kill_and_resume(tmp_path: Path, database: dict[str, str]) -> None:
    env = _env(
        tmp_path / "data", ALIZE_JOBS__EMBEDDED_WORKER="false", ALIZE_JOBS__BATCH_CONCURRENCY="2", **database
    )
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


def test_cli_uploads_runs_with_a_progress_bar_and_downloads(
    batch_server: tuple[LiveServer, str], tmp_path: Path
) -> None:
    server, key = batch_server
    env = {**os.environ, "ALIZE_URL": server.url, "ALIZE_API_KEY": key}

    def alize(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alize.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    source = tmp_path / "in.jsonl"
    source.write_bytes(_lines(6))
    uploaded = alize("files", "upload", str(source))
    assert uploaded.returncode == 0, uploaded.stderr
    file_id = uploaded.stdout.split()[0]
    assert "6 lines" in uploaded.stdout
    assert file_id in alize("files", "list").stdout
    created = alize("batch", "create", file_id, "--wait", "--poll-s", "0.3")
    assert created.returncode == 0, created.stderr
    batch_id, status = created.stdout.split()[:2]
    assert status == "completed" and "6/6 done" in created.stdout
    assert "[" + "#" * 30 + "] 6/6 lines  completed" in created.stderr  # the bar ran to its end
    assert batch_id in alize("batch", "list").stdout
    assert "completed" in alize("batch", "status", batch_id).stdout
    results = alize("batch", "results", batch_id)
    assert [json.loads(x)["custom_id"] for x in results.stdout.splitlines()] == [
        f"line-{i}" for i in range(6)
    ]
    assert alize("batch", "results", batch_id, "--errors").returncode == 1  # no failed line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a", "body": {}}\nnot json\n')
    refused = alize("files", "upload", str(bad))
    assert refused.returncode == 1 and "line 2" in refused.stderr
    assert alize("files", "rm", file_id).returncode == 0


def _project_key(server: LiveServer, name: str, budget: int | None = None) -> tuple[str, dict[str, str]]:
    project = _admin(server, "POST", "/projects", {"name": name, "monthly_budget_micros": budget})
    key = _admin(server, "POST", "/keys", {"name": "k", "project_id": project["id"]})["key"]
    return project["id"], {"Authorization": f"Bearer {key}"}


def _create(server: LiveServer, auth: dict[str, str], lines: int) -> str:
    uploaded = httpx.post(
        f"{server.v1}/files",
        files={"file": ("in.jsonl", _lines(lines))},
        data={"purpose": "batch"},
        headers=auth,
        timeout=60,
    ).json()
    created = httpx.post(
        f"{server.v1}/batches",
        json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions"},
        headers=auth,
        timeout=60,
    )
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def _until(server: LiveServer, auth: dict[str, str], batch_id: str, done: Any, timeout_s: float = 300) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = httpx.get(f"{server.v1}/batches/{batch_id}", headers=auth, timeout=60).json()
        if done(batch):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.3)


def test_a_budget_for_about_ten_lines_stops_the_batch(batch_server: tuple[LiveServer, str]) -> None:
    server, _ = batch_server
    # a line: ~33 prompt tokens at 1 micro-unit and up to 6 completion tokens at 2 (batch prices)
    budget = 450
    project, auth = _project_key(server, "budget", budget)
    batch_id = _create(server, auth, 30)
    batch = _until(server, auth, batch_id, lambda b: b["status"] in ("completed", "failed"))
    counts = batch["request_counts"]
    assert batch["status"] == "completed" and counts["total"] == 30
    assert 5 <= counts["completed"] <= 14 and counts["completed"] + counts["failed"] == 30
    assert batch["errors"]["data"][0]["code"] == "insufficient_quota"
    errors = httpx.get(f"{server.v1}/files/{batch['error_file_id']}/content", headers=auth, timeout=60).text
    assert {json.loads(x)["error"]["code"] for x in errors.splitlines()} == {"insufficient_quota"}
    spent = _admin(server, "GET", f"/projects/{project}")["budget"]
    assert spent["spent_micros"] <= budget and spent["reserved_micros"] == 0


def test_cancel_mid_batch_keeps_and_bills_the_finished_lines(batch_server: tuple[LiveServer, str]) -> None:
    server, _ = batch_server
    _, auth = _project_key(server, "cancel")
    batch_id = _create(server, auth, 60)
    _until(server, auth, batch_id, lambda b: b["request_counts"]["completed"] >= 3)
    cancelled = httpx.post(f"{server.v1}/batches/{batch_id}/cancel", headers=auth, timeout=60).json()
    assert cancelled["status"] in ("cancelling", "cancelled") and cancelled["cancelling_at"]
    batch = _until(server, auth, batch_id, lambda b: b["status"] == "cancelled")
    done = batch["request_counts"]["completed"]
    assert 3 <= done < 60 and batch["cancelled_at"]
    kept = httpx.get(f"{server.v1}/files/{batch['output_file_id']}/content", headers=auth, timeout=60).text
    kept_ids = [json.loads(x)["custom_id"] for x in kept.splitlines()]
    assert len(kept_ids) == done == len(set(kept_ids))
    billed = [
        i
        for i in range(60)
        if httpx.get(
            f"{server.url}/admin/api/usage/requests/{batch_id}-{i}",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=60,
        ).status_code
        == 200
    ]
    assert len(billed) == done
