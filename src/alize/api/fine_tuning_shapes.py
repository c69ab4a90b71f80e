"""Fine-tuning jobs in OpenAI's and Mistral's shapes: request bodies to a
:class:`~alize.jobs.finetune.service.NewJob`, stored jobs and events to reply JSON.

Both APIs share ``/v1/fine_tuning/jobs``. A create body with ``training_files`` (a list) is
Mistral's, one with ``training_file`` is OpenAI's; a job then answers in the shape it was created
in, wherever it is read from. Hyperparameters land in one set of names
(:class:`~alize.jobs.finetune.hyperparams.Hyperparameters`): OpenAI's ``n_epochs``,
``batch_size`` and ``learning_rate_multiplier`` (``"auto"`` = Alizé's default; the multiplier
scales the base LoRA rate), Mistral's ``epochs`` and the rest by their own names. Alizé's own
knobs (``lora_rank``, ``training_steps``, ``seq_len``...) are accepted in either shape; an
unknown name is a 400 naming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from alize.errors import InvalidRequestError
from alize.jobs.finetune.hyperparams import BASE_LEARNING_RATE
from alize.jobs.finetune.records import FineTuningJob, JobEvent
from alize.jobs.finetune.service import Checked, NewJob, TrainingFile
from alize.protocol.mistral.fine_tuning import MistralJobCreate
from alize.protocol.openai.fine_tuning import OpenAIJobCreate

_MISTRAL_STATUS = {
    "validating_files": "VALIDATING",
    "validated": "VALIDATED",
    "queued": "QUEUED",
    "running": "RUNNING",
    "succeeded": "SUCCESS",
    "failed": "FAILED",
    "cancelled": "CANCELLED",
}


def _ts(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def is_mistral_body(body: dict[str, Any]) -> bool:
    return "training_files" in body and "training_file" not in body


def openai_request(body: OpenAIJobCreate) -> NewJob:
    if body.method is not None and body.method.type != "supervised":
        raise InvalidRequestError(
            f"method.type '{body.method.type}' is not supported; use 'supervised'", param="method.type"
        )
    raw = dict(body.hyperparameters or {})
    if body.method is not None and body.method.supervised is not None:
        raw.update(body.method.supervised.hyperparameters)
    hyper = {k: v for k, v in raw.items() if v != "auto"}
    if "learning_rate_multiplier" in hyper:
        multiplier = hyper.pop("learning_rate_multiplier")
        if (
            not isinstance(multiplier, int | float)
            or isinstance(multiplier, bool)
            or not 0 < multiplier <= 50
        ):
            raise InvalidRequestError(
                "learning_rate_multiplier must be a number > 0 and <= 50 (or 'auto')",
                param="hyperparameters.learning_rate_multiplier",
                code="invalid_hyperparameters",
            )
        hyper["learning_rate"] = BASE_LEARNING_RATE * float(multiplier)
    if body.seed is not None:
        hyper["seed"] = body.seed
    return NewJob(
        api="openai",
        model=body.model,
        training_files=(TrainingFile(body.training_file),),
        validation_file=body.validation_file,
        suffix=body.suffix,
        hyperparameters=hyper,
        metadata=dict(body.metadata) if body.metadata else None,
    )


def mistral_request(body: MistralJobCreate) -> NewJob:
    hyper = {k: v for k, v in body.hyperparameters.items() if v is not None}
    if "epochs" in hyper:
        hyper["n_epochs"] = hyper.pop("epochs")
    if hyper.pop("fim_ratio", 0) not in (0, 0.0):
        raise InvalidRequestError(
            "fim_ratio is not supported (chat fine-tuning only)",
            param="hyperparameters.fim_ratio",
            code="invalid_hyperparameters",
        )
    return NewJob(
        api="mistral",
        model=body.model,
        training_files=tuple(TrainingFile(f.file_id, f.weight) for f in body.training_files),
        validation_file=body.validation_files[0] if body.validation_files else None,
        suffix=body.suffix,
        hyperparameters=hyper,
        auto_start=body.auto_start,
    )


def dry_run_reply(checked: Checked) -> dict[str, Any]:
    """Mistral's ``dry_run`` answer: what the run would train and cost (upper bounds, from the
    files' size; the duration is unknown until a run on this machine measures it)."""
    h = checked.hyperparameters
    steps = h.training_steps
    return {
        "object": "job.metadata",
        "expected_duration_seconds": None,
        "cost": checked.cost_micros / 1_000_000,
        "cost_currency": checked.base.card.currency,
        "train_tokens_per_step": h.batch_size * h.seq_len,
        "train_tokens": checked.train_tokens,
        "data_tokens": checked.data_tokens,
        "estimated_start_time": None,
        "epochs": None if steps is not None else h.n_epochs,
        "training_steps": steps,
    }


# ---------------------------------------------------------------------- OpenAI replies


def openai_job(job: FineTuningJob) -> dict[str, Any]:
    h = job.hyperparameters
    hyper = {
        "n_epochs": h.get("n_epochs"),
        "batch_size": h.get("batch_size"),
        "learning_rate_multiplier": float(h.get("learning_rate", BASE_LEARNING_RATE)) / BASE_LEARNING_RATE,
    }
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": _ts(job.created_at),
        "error": job.error,
        "fine_tuned_model": job.fine_tuned_model,
        "finished_at": _ts(job.finished_at),
        "hyperparameters": hyper,
        "model": job.model,
        "organization_id": job.project_id,
        "result_files": list((job.result or {}).get("result_files") or []),
        "seed": h.get("seed"),
        "status": job.status if job.status != "validated" else "validating_files",
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_files[0]["file_id"] if job.training_files else None,
        "validation_file": job.validation_file,
        "integrations": None,
        "estimated_finish": _ts(job.estimated_finish) if job.status == "running" else None,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "metadata": job.metadata,
        "user_provided_suffix": job.suffix,
        # Alizé's progress fields (what `alize finetune` draws its bar from)
        "step": job.step,
        "total_steps": job.total_steps,
    }


def openai_event(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "fine_tuning.job.event",
        "created_at": _ts(event.created_at),
        "level": event.level,
        "message": event.message,
        "data": event.data or {},
        "type": event.type,
    }


def _metrics(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": data.get("step"),
        "train_loss": data.get("train_loss"),
        "train_mean_token_accuracy": data.get("train_mean_token_accuracy"),
        "valid_loss": data.get("valid_loss"),
        "valid_mean_token_accuracy": data.get("valid_mean_token_accuracy"),
        "full_valid_loss": data.get("valid_loss"),
        "full_valid_mean_token_accuracy": data.get("valid_mean_token_accuracy"),
    }


def openai_checkpoint(job: FineTuningJob, event: JobEvent) -> dict[str, Any]:
    data = event.data or {}
    step = int(data.get("step") or 0)
    return {
        "id": event.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": _ts(event.created_at),
        "fine_tuned_model_checkpoint": f"ft:{job.model}:{job.suffix}:{job.id}:ckpt-step-{step}",
        "fine_tuning_job_id": job.id,
        "metrics": _metrics(data),
        "step_number": step,
    }


# ---------------------------------------------------------------------- Mistral replies


def mistral_status(job: FineTuningJob) -> str:
    if job.status == "running" and job.cancel_requested:
        return "CANCELLATION_REQUESTED"
    if job.status == "failed" and (job.error or {}).get("code") == "invalid_training_file":
        return "FAILED_VALIDATION"
    return _MISTRAL_STATUS.get(job.status, job.status.upper())


def mistral_job(
    job: FineTuningJob, events: list[JobEvent] | None = None, checkpoints: list[JobEvent] | None = None
) -> dict[str, Any]:
    h = job.hyperparameters
    reply: dict[str, Any] = {
        "id": job.id,
        "object": "job",
        "auto_start": job.auto_start,
        "model": job.model,
        "status": mistral_status(job),
        "job_type": "completion",
        "created_at": _ts(job.created_at),
        "modified_at": _ts(job.updated_at),
        "training_files": [f["file_id"] for f in job.training_files],
        "validation_files": [job.validation_file] if job.validation_file else [],
        "fine_tuned_model": job.fine_tuned_model,
        "suffix": job.suffix,
        "integrations": [],
        "repositories": [],
        "trained_tokens": job.trained_tokens,
        "metadata": {"train_tokens": job.trained_tokens, "estimated_start_time": None},
        "hyperparameters": {
            "training_steps": h.get("training_steps"),
            "learning_rate": h.get("learning_rate"),
            "weight_decay": h.get("weight_decay"),
            "warmup_fraction": h.get("warmup_fraction"),
            "epochs": h.get("n_epochs"),
            "seq_len": h.get("seq_len"),
        },
    }
    if events is not None:
        reply["events"] = [
            {"name": "status-updated", "data": e.data, "created_at": _ts(e.created_at)}
            for e in events
            if e.data and "status" in e.data
        ]
    if checkpoints is not None:
        reply["checkpoints"] = [
            {
                "metrics": {
                    "train_loss": (c.data or {}).get("train_loss"),
                    "valid_loss": (c.data or {}).get("valid_loss"),
                    "valid_mean_token_accuracy": (c.data or {}).get("valid_mean_token_accuracy"),
                },
                "step_number": (c.data or {}).get("step"),
                "created_at": _ts(c.created_at),
            }
            for c in checkpoints
        ]
    return reply
