"""A server killed (SIGKILL) in the middle of a fine-tuning run: its training process exits with
it (the lifeline), and the next server on the same data takes the job over once the lease
expires and resumes from the last checkpoint instead of starting again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from openai import OpenAI
from tests.e2e.server import admin, live_server
from tests.e2e.test_fine_tuning_jobs import _upload, _wait
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.jobs.finetune.conftest import TOY, jsonl

pytestmark = pytest.mark.e2e


def _runs(workdir_part: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", workdir_part], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def test_a_killed_server_s_job_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    base = write_tiny_llama_gguf(tmp_path / "tiny.gguf", n_head_kv=2, scale=0.2, n_ctx=512, seed=3)
    data_dir = tmp_path / "data"
    env = {
        "ALIZE_DATA_DIR": str(data_dir),
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": "tiny", "model_path": str(base)}]),
        "ALIZE_DEFAULT_MODEL": "tiny",
        "ALIZE_ENGINE__PARALLEL": "1",
        "ALIZE_ENGINE__CTX_PER_SLOT": "256",
        "ALIZE_CHAT__ENABLED": "false",
        "ALIZE_FINE_TUNING__THREADS": "1",
        "ALIZE_JOBS__LEASE_S": "2",
        "ALIZE_JOBS__HEARTBEAT_S": "0.5",
        "ALIZE_JOBS__POLL_S": "0.5",
    }
    hyper = {"training_steps": 60, "batch_size": 4, "checkpoint_every": 5}
    with live_server(tmp_path, env) as first:
        assert admin(first, "POST", "/models", {"path": str(base), "id": "tiny"}).status_code == 201
        file_id = _upload(first, jsonl(TOY))
        with OpenAI(base_url=first.v1, api_key="unused", max_retries=0) as client:
            job = client.fine_tuning.jobs.create(
                model="tiny",
                training_file=file_id,
                method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
            )
            deadline = time.monotonic() + 60
            while (client.fine_tuning.jobs.retrieve(job.id).step or 0) < 7:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert _runs(job.id)  # the training process is running
        os.kill(first.process.pid, signal.SIGKILL)  # the server alone: its child must follow
        first.process.wait(10)
        deadline = time.monotonic() + 10
        while _runs(job.id):
            assert time.monotonic() < deadline, "the training process outlived its server"
            time.sleep(0.1)
    spec = data_dir / "fine_tuning" / job.id / "spec.json"
    assert spec.is_file()
    with live_server(tmp_path, env) as second:
        with OpenAI(base_url=second.v1, api_key="unused", max_retries=0) as client:
            done, _ = _wait(client, job.id, {"succeeded", "failed", "cancelled"}, timeout=60)
            events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
            listed = {m.id for m in client.models.list()}
        resumed = [e.data["resumed_at"] for e in events if "resumed_at" in (e.data or {})]
        assert resumed[-1] == 0 and resumed[0] >= 5  # newest first: the second run resumed
        steps = [e.data["step"] for e in events if e.type == "metrics"]
        assert min(s for s in steps if s > resumed[0]) == resumed[0] + 1
        assert done.status == "succeeded" and done.fine_tuned_model in listed
