"""OpenAI's and Mistral's fine-tuning bodies land in one set of hyperparameters; jobs answer in
the shape they were created in (statuses, Mistral's CANCELLATION_REQUESTED and FAILED_VALIDATION)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from alize.api.fine_tuning_shapes import (
    is_mistral_body,
    mistral_job,
    mistral_request,
    openai_job,
    openai_request,
)
from alize.errors import InvalidRequestError
from alize.jobs.finetune.hyperparams import BASE_LEARNING_RATE, Hyperparameters
from alize.jobs.finetune.outputs import weighted_lines
from alize.jobs.finetune.records import FineTuningJob
from alize.jobs.finetune.service import estimated_tokens
from alize.protocol.mistral.fine_tuning import MistralJobCreate
from alize.protocol.openai.fine_tuning import OpenAIJobCreate

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def _job(**changes: object) -> FineTuningJob:
    job = FineTuningJob(
        id="ftjob_1",
        project_id="proj_1",
        key_id=None,
        api="openai",
        model="tiny",
        training_files=[{"file_id": "file-a", "weight": 1.0}],
        validation_file=None,
        suffix="route",
        hyperparameters=Hyperparameters().model_dump(),
        auto_start=True,
        metadata=None,
        status="running",
        cancel_requested=False,
        job_id="job_1",
        fine_tuned_model=None,
        trained_tokens=None,
        step=3,
        total_steps=10,
        error=None,
        result=None,
        created_at=NOW,
        updated_at=NOW,
        started_at=NOW,
        finished_at=None,
        estimated_finish=NOW,
    )
    return replace(job, **changes)  # type: ignore[arg-type]


def test_the_body_shape_decides_the_api() -> None:
    assert is_mistral_body({"model": "m", "training_files": [{"file_id": "f"}]})
    assert not is_mistral_body({"model": "m", "training_file": "f"})
    assert not is_mistral_body({"model": "m", "training_file": "f", "training_files": []})


def test_openai_hyperparameters_map_auto_and_the_multiplier() -> None:
    body = OpenAIJobCreate.model_validate(
        {
            "model": "m",
            "training_file": "file-a",
            "seed": 7,
            "method": {
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 2}
                },
            },
        }
    )
    job = openai_request(body)
    assert job.hyperparameters == {"n_epochs": 2, "learning_rate": 2 * BASE_LEARNING_RATE, "seed": 7}
    with pytest.raises(InvalidRequestError) as caught:
        openai_request(
            OpenAIJobCreate.model_validate({"model": "m", "training_file": "f", "method": {"type": "dpo"}})
        )
    assert caught.value.param == "method.type"
    with pytest.raises(InvalidRequestError) as caught:
        openai_request(
            OpenAIJobCreate.model_validate(
                {"model": "m", "training_file": "f", "hyperparameters": {"learning_rate_multiplier": -1}}
            )
        )
    assert caught.value.param == "hyperparameters.learning_rate_multiplier"


def test_mistral_body_maps_epochs_weights_and_refuses_fim() -> None:
    body = MistralJobCreate.model_validate(
        {
            "model": "m",
            "training_files": [{"file_id": "a", "weight": 2}, {"file_id": "b"}],
            "validation_files": ["v"],
            "hyperparameters": {"epochs": 2, "training_steps": None, "seq_len": 256, "fim_ratio": 0},
            "auto_start": False,
        }
    )
    job = mistral_request(body)
    assert job.hyperparameters == {"n_epochs": 2, "seq_len": 256}
    assert [(f.file_id, f.weight) for f in job.training_files] == [("a", 2.0), ("b", 1.0)]
    assert job.validation_file == "v" and job.auto_start is False
    fim = body.model_copy(update={"hyperparameters": {"fim_ratio": 0.5}})
    with pytest.raises(InvalidRequestError) as caught:
        mistral_request(fim)
    assert caught.value.param == "hyperparameters.fim_ratio"


def test_statuses_in_each_shape() -> None:
    assert openai_job(_job())["status"] == "running"
    assert openai_job(_job(status="validated"))["status"] == "validating_files"  # OpenAI has no such state
    assert mistral_job(_job(api="mistral"))["status"] == "RUNNING"
    assert mistral_job(_job(api="mistral", cancel_requested=True))["status"] == "CANCELLATION_REQUESTED"
    bad_file = _job(
        status="failed", error={"code": "invalid_training_file", "message": "line 2", "param": None}
    )
    assert mistral_job(bad_file)["status"] == "FAILED_VALIDATION"
    assert mistral_job(_job(status="failed", error={"code": "training_failed"}))["status"] == "FAILED"
    shown = openai_job(_job())
    assert shown["hyperparameters"]["learning_rate_multiplier"] == pytest.approx(1.0)
    assert shown["estimated_finish"] == int(NOW.timestamp()) and shown["training_file"] == "file-a"


def test_weights_repeat_a_file_s_examples_relative_to_the_lightest() -> None:
    merged = weighted_lines([(b'{"a":1}\n\n', 1.0), (b'{"b":1}\n', 3.0), (b'{"c":1}', 100.0)])
    lines = merged.decode().splitlines()
    assert lines.count('{"a":1}') == 1 and lines.count('{"b":1}') == 3
    assert lines.count('{"c":1}') == 10  # at most 10x


def test_the_estimate_bounds_what_a_run_can_train() -> None:
    hyper = Hyperparameters(n_epochs=3)
    assert estimated_tokens(hyper, 3000) == 3 * 1001
    stepped = Hyperparameters(training_steps=2, batch_size=4, seq_len=64)
    assert estimated_tokens(stepped, 3_000_000) == 2 * 4 * 64
