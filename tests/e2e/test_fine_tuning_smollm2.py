"""Fine-tuning the packaged SmolLM2-135M-Instruct itself, end to end, in a few steps: the job
reads the catalog's Q4_1 GGUF through transformers, trains a LoRA on CPU, converts it to a
GGUF adapter and publishes ``ft:smollm2-135m-instruct:<suffix>:<job>`` on the base's llama.cpp
deployment, which the official openai SDK then calls. The tiny-Llama tests cover the job's
behaviour in depth; this one proves the path works on the real base (issue 19) and stays short:
3 optimizer steps of 2 sequences of at most 64 tokens."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI
from tests.e2e.server import LiveServer, live_server
from tests.jobs.finetune.conftest import TOY, jsonl

pytestmark = pytest.mark.e2e
BASE = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "ALIZE_ENGINE__PARALLEL": "2",
        "ALIZE_ENGINE__CTX_PER_SLOT": "512",
        "ALIZE_CHAT__ENABLED": "false",
        "ALIZE_FINE_TUNING__THREADS": "2",
        "ALIZE_JOBS__HEARTBEAT_S": "1",
        "ALIZE_JOBS__POLL_S": "0.5",
    }
    with live_server(tmp_path_factory.mktemp("ft-smollm2"), env) as s:
        yield s


def _first_token_logprob(client: OpenAI, model: str) -> float:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "tax please"}],
        max_tokens=1,
        temperature=0,
        logprobs=True,
        top_logprobs=1,
    )
    content = reply.choices[0].logprobs.content if reply.choices[0].logprobs else None
    assert content, reply
    return content[0].logprob


def test_a_few_steps_on_the_packaged_model_publish_a_servable_adapter(
    server: LiveServer, tmp_path: Path
) -> None:
    with OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120) as client:
        base_logprob = _first_token_logprob(client, BASE)
        file_id = client.files.create(file=("toy.jsonl", jsonl(TOY)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(
            model=BASE,
            training_file=file_id,
            suffix="smoke",
            seed=5,
            method={
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {
                        "training_steps": 3,
                        "batch_size": 2,
                        "micro_batch_size": 2,
                        "seq_len": 64,
                        "lora_rank": 4,
                        "learning_rate": 5e-3,
                        "validation_fraction": 0,
                    }
                },
            },
        )
        deadline = time.monotonic() + 900  # the first run on a base dequantises its GGUF
        while (done := client.fine_tuning.jobs.retrieve(job.id)).status not in (
            "succeeded",
            "failed",
            "cancelled",
        ):
            assert time.monotonic() < deadline, done
            time.sleep(1)
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model == f"ft:{BASE}:smoke:{job.id}"
        assert done.trained_tokens and done.trained_tokens > 0
        metrics = [
            e for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"
        ]
        assert sorted(e.data["step"] for e in metrics if e.data) == [1, 2, 3]
        assert done.fine_tuned_model in {m.id for m in client.models.list()}
        # a trained LoRA moves the logits: the adapter is really applied on llama.cpp
        tuned_logprob = _first_token_logprob(client, done.fine_tuned_model)
        assert tuned_logprob != base_logprob
        assert _first_token_logprob(client, BASE) == base_logprob  # and the base is still itself
