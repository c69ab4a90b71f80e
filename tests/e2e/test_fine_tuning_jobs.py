"""Fine-tuning end to end on a live server: the official openai SDK creates a job on a tiny
random Llama (a catalog card over a GGUF this test writes, deployed on llama.cpp); the job goes
validating_files → queued → running → succeeded on the server's own worker, reports loss and
token accuracy, and its ``ft:`` model is listed and answers differently from the base, served as
a LoRA adapter on the base's llama.cpp deployment. Mistral's shape (``auto_start`` false, then
cancelled) and the 400s run on the same server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import APIStatusError, OpenAI
from tests.e2e.server import LiveServer, admin, cli, live_server
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.jobs.finetune.conftest import TOY, chat_line, jsonl

pytestmark = pytest.mark.e2e
#: micro-units per million training tokens: 2 per token
PRICE = 2_000_000
#: accepted by the upload check (it has an assistant turn) but not by training: it ends on the user
_UNANSWERED = {
    "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "and?"},
    ]
}


@pytest.fixture
def client(server: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("fine-tuning")
    base = write_tiny_llama_gguf(folder / "tiny.gguf", n_head_kv=2, scale=0.2, n_ctx=512, seed=3)
    env = {
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": "tiny", "model_path": str(base)}]),
        "ALIZE_DEFAULT_MODEL": "tiny",
        "ALIZE_ENGINE__PARALLEL": "2",
        "ALIZE_ENGINE__CTX_PER_SLOT": "256",
        "ALIZE_CHAT__ENABLED": "false",
        "ALIZE_FINE_TUNING__THREADS": "1",
        "ALIZE_JOBS__HEARTBEAT_S": "0.5",
        "ALIZE_JOBS__POLL_S": "0.5",
    }
    with live_server(folder, env) as s:
        added = admin(s, "POST", "/models", {"path": str(base), "id": "tiny"})
        assert added.status_code == 201, added.text
        priced = admin(s, "PATCH", "/models/tiny", {"price_training_per_million": PRICE})
        assert priced.status_code == 200, priced.text
        yield s


def _upload(server: LiveServer, data: bytes, purpose: str = "fine-tune") -> str:
    with OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
        return client.files.create(file=("train.jsonl", data), purpose=purpose).id  # type: ignore[arg-type]


def _wait(client: OpenAI, job_id: str, until: set[str], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if job.status in until:
            return job, seen
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {seen} after {timeout} s")


def _ask(client: OpenAI, model: str, text: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=0, seed=1, max_tokens=12
    )
    return reply.choices[0].message.content or ""


def test_a_job_trains_publishes_and_serves_its_model(server: LiveServer, client: OpenAI) -> None:
    file_id = _upload(server, jsonl(TOY))
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=file_id,
        suffix="route",
        seed=3,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": 1,
                    "batch_size": 4,
                    "learning_rate_multiplier": 25,
                    "training_steps": 40,
                    "checkpoint_every": 10,
                }
            },
        },
    )
    assert job.status == "validating_files" and job.model == "tiny" and job.training_file == file_id
    done, seen = _wait(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    assert seen[-1] == "succeeded" and "running" in seen
    assert done.fine_tuned_model == f"ft:tiny:route:{job.id}"
    assert done.trained_tokens and done.trained_tokens > 0
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 40
    last = metrics[0].data  # newest first
    assert last["step"] == 40 and last["train_loss"] < metrics[-1].data["train_loss"]
    assert "valid_loss" in last and "train_mean_token_accuracy" in last
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [40, 30, 20, 10]
    assert checkpoints[0].metrics.train_loss is not None
    assert len(done.result_files) == 1  # the step metrics as CSV, through /v1/files
    csv_rows = client.files.content(done.result_files[0]).text.splitlines()
    assert csv_rows[0].startswith("step,train_loss,") and len(csv_rows) == 41
    assert csv_rows[-1].startswith("40,")
    assert done.fine_tuned_model in {m.id for m in client.models.list()}
    tuned = _ask(client, done.fine_tuned_model, "tax please")
    assert tuned != _ask(client, "tiny", "tax please")
    assert '"d"' in tuned  # it learned the task's answer format
    usage = admin(server, "GET", f"/usage/requests/{job.id}").json()  # one row, billed at the price
    assert usage["prompt_tokens"] == done.trained_tokens and usage["deployment"] == "tiny"
    assert usage["cost_micros"] == 2 * done.trained_tokens and usage["status"] == "success"
    status = cli(server, "finetune", "status", job.id)
    assert status.returncode == 0, status.stderr
    assert done.fine_tuned_model in status.stdout and f"[{'#' * 30}]    40/40" in status.stdout
    assert job.id in cli(server, "finetune", "list").stdout
    assert "New fine-tuned model created" in cli(server, "finetune", "events", job.id).stdout
    card = admin(server, "GET", f"/models/{done.fine_tuned_model}").json()
    assert card["fine_tune"]["trained_tokens"] == done.trained_tokens
    assert card["fine_tune"]["train_loss"] is not None and card["source"]["base"] == "tiny"


def test_a_merged_export_is_served_as_a_model_of_its_own(server: LiveServer, client: OpenAI) -> None:
    file_id = _upload(server, jsonl(TOY))
    hyper = {"training_steps": 30, "batch_size": 4, "learning_rate_multiplier": 25, "export": "merged"}
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=file_id,
        suffix="merged",
        seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
    )
    done, _ = _wait(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    card = admin(server, "GET", f"/models/{done.fine_tuned_model}").json()
    assert card["source"]["kind"] == "gguf" and card["source"]["path"].endswith("merged.gguf")
    assert card["size_bytes"] > 0 and "merged" in card["description"]
    tuned = _ask(client, done.fine_tuned_model, "tax please")
    assert tuned != _ask(client, "tiny", "tax please") and '"d"' in tuned  # it learned the format


def test_cancel_stops_a_running_job_between_steps(server: LiveServer, client: OpenAI) -> None:
    file_id = _upload(server, jsonl(TOY))
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"training_steps": 5000}}},
    )
    deadline = time.monotonic() + 60
    while (current := client.fine_tuning.jobs.retrieve(job.id)).status != "running" or not current.step:
        assert time.monotonic() < deadline and current.status in ("validating_files", "queued", "running")
        time.sleep(0.2)
    asked = time.monotonic()
    client.fine_tuning.jobs.cancel(job.id)
    done, _ = _wait(client, job.id, {"succeeded", "failed", "cancelled"}, timeout=30)
    assert done.status == "cancelled" and time.monotonic() - asked < 10
    assert done.fine_tuned_model is None and done.trained_tokens
    usage = admin(server, "GET", f"/usage/requests/{job.id}").json()  # the steps it did are billed
    assert usage["status"] == "cancelled" and usage["cost_micros"] == 2 * done.trained_tokens


def test_a_sequence_longer_than_seq_len_fails_the_job_naming_the_line(
    server: LiveServer, client: OpenAI
) -> None:
    long = chat_line("please " * 40, "ok")
    file_id = _upload(server, jsonl([chat_line("hi", "there"), long]))
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"seq_len": 32}}},
    )
    done, seen = _wait(client, job.id, {"succeeded", "failed", "cancelled"}, timeout=60)
    assert done.status == "failed" and "running" not in seen
    assert done.error.code == "invalid_training_file" and done.error.param == "training_file"
    assert "line 2" in done.error.message


def test_mistral_shape_waits_for_start_and_cancels(server: LiveServer) -> None:
    file_id = _upload(server, jsonl(TOY))
    body = {
        "model": "tiny",
        "training_files": [{"file_id": file_id, "weight": 1}],
        "hyperparameters": {"training_steps": 5, "learning_rate": 1e-4},
        "auto_start": False,
    }
    before = httpx.get(server.v1 + "/fine_tuning/jobs?page=0", timeout=30).json()["total"]
    dry = httpx.post(server.v1 + "/fine_tuning/jobs?dry_run=true", json=body, timeout=30).json()
    assert dry["object"] == "job.metadata" and dry["training_steps"] == 5 and dry["data_tokens"] > 0
    assert dry["cost"] == pytest.approx(dry["train_tokens"] * PRICE / 1e12)
    assert httpx.get(server.v1 + "/fine_tuning/jobs?page=0", timeout=30).json()["total"] == before
    created = httpx.post(server.v1 + "/fine_tuning/jobs", json=body, timeout=30)
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["object"] == "job" and job["status"] == "VALIDATING" and job["auto_start"] is False
    url = f"{server.v1}/fine_tuning/jobs/{job['id']}"
    deadline = time.monotonic() + 30
    while httpx.get(url, timeout=30).json()["status"] != "VALIDATED":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelled = httpx.post(url + "/cancel", timeout=30).json()
    assert cancelled["status"] == "CANCELLED"
    assert [e["data"]["status"] for e in cancelled["events"]] == [
        "validating_files",
        "validated",
        "cancelled",
    ]
    refused = httpx.post(url + "/start", timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_state"


@pytest.mark.parametrize(
    ("lines", "extra", "status", "param", "words"),
    [
        ([chat_line("hi", "there"), _UNANSWERED], {}, 400, "training_file", "line 2"),
        (
            [chat_line("hi", "there")],
            {"hyperparameters": {"lora_rank": 999}},
            400,
            "hyperparameters.lora_rank",
            "",
        ),
        (
            [chat_line("hi", "there")],
            {"hyperparameters": {"dropout": 0.1}},
            400,
            "hyperparameters.dropout",
            "",
        ),
        ([chat_line("hi", "there")], {"model": "no-such-model"}, 404, "model", "no-such-model"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    server: LiveServer,
    client: OpenAI,
    lines: list[dict[str, object]],
    extra: dict[str, Any],
    status: int,
    param: str,
    words: str,
) -> None:
    file_id = _upload(server, jsonl(lines))
    kwargs: dict[str, Any] = {"model": "tiny", "training_file": file_id, **extra}
    with pytest.raises(APIStatusError) as caught:
        client.fine_tuning.jobs.create(**kwargs)
    assert caught.value.status_code == status
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == param and words in error["message"]


def test_the_cli_creates_a_job_and_follows_it_to_the_end(server: LiveServer) -> None:
    file_id = _upload(server, jsonl(TOY))
    created = cli(
        server, "finetune", "create", "tiny", file_id, "--suffix", "cli", "--steps", "3", "--follow"
    )
    assert created.returncode == 0, created.stderr
    assert "ft:tiny:cli:" in created.stdout and "succeeded" in created.stdout
    progress = created.stderr.splitlines()  # not a terminal: one progress line per poll
    assert progress[-1].startswith(f"[{'#' * 30}]     3/3  loss ") and progress[-1].endswith("succeeded")
