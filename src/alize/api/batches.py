"""``/v1/batches`` (OpenAI) and ``/v1/batch/jobs`` (Mistral): create, list, retrieve, cancel.

Both shapes are views of the same batches (:mod:`alize.jobs.batches`); a batch created through
one API can be read through the other. Mistral's statuses map from OpenAI's lifecycle:
``validating`` → ``QUEUED``; ``in_progress``, ``finalizing`` → ``RUNNING``; ``completed`` →
``SUCCESS``; ``failed`` → ``FAILED``; ``expired`` → ``TIMEOUT_EXCEEDED``; ``cancelling`` →
``CANCELLATION_REQUESTED``; ``cancelled`` → ``CANCELLED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from alize.api.auth import InferenceDep
from alize.api.deps import ServicesDep
from alize.api.files import caller_project
from alize.errors import InvalidRequestError
from alize.jobs.batches import STATUSES, Batch

router = APIRouter(tags=["batches"])

MISTRAL_STATUS = {
    "validating": "QUEUED",
    "in_progress": "RUNNING",
    "finalizing": "RUNNING",
    "completed": "SUCCESS",
    "failed": "FAILED",
    "expired": "TIMEOUT_EXCEEDED",
    "cancelling": "CANCELLATION_REQUESTED",
    "cancelled": "CANCELLED",
}
_FROM_MISTRAL: dict[str, list[str]] = {}
for _ours, _theirs in MISTRAL_STATUS.items():
    _FROM_MISTRAL.setdefault(_theirs, []).append(_ours)


def _ts(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


class CreateBatch(BaseModel):
    """OpenAI's ``POST /v1/batches`` body."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(max_length=64)
    endpoint: str = Field(max_length=64)
    completion_window: str = Field("24h", max_length=8)
    metadata: dict[str, str] | None = None
    #: ``{"anchor": "created_at", "seconds": N}``: when the output and error files expire
    output_expires_after: dict[str, Any] | None = None


class CreateMistralBatch(BaseModel):
    """Mistral's ``POST /v1/batch/jobs`` body: input files or inline requests."""

    model_config = ConfigDict(extra="forbid")

    input_files: list[str] | None = Field(None, max_length=100)
    requests: list[dict[str, Any]] | None = None
    endpoint: str = Field(max_length=64)
    model: str | None = Field(None, max_length=256)
    agent_id: str | None = None
    metadata: dict[str, str] | None = None
    timeout_hours: int = Field(24, ge=1, le=168, strict=True)


def openai_json(batch: Batch) -> dict[str, Any]:
    errors = {"object": "list", "data": [dict(e) for e in batch.errors]} if batch.errors else None
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": errors,
        "input_file_id": batch.input_file_ids[0] if batch.input_file_ids else None,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": _ts(batch.created_at),
        "in_progress_at": _ts(batch.in_progress_at),
        "expires_at": _ts(batch.expires_at),
        "finalizing_at": _ts(batch.finalizing_at),
        "completed_at": _ts(batch.completed_at),
        "failed_at": _ts(batch.failed_at),
        "expired_at": _ts(batch.expired_at),
        "cancelling_at": _ts(batch.cancelling_at),
        "cancelled_at": _ts(batch.cancelled_at),
        "request_counts": {"total": batch.total, "completed": batch.completed, "failed": batch.failed},
        "metadata": batch.metadata,
        "usage": {
            "input_tokens": batch.prompt_tokens,
            "input_tokens_details": {"cached_tokens": batch.cached_tokens},
            "output_tokens": batch.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": batch.prompt_tokens + batch.completion_tokens,
        },
    }


def mistral_json(batch: Batch, outputs: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Mistral's BatchJob; ``outputs``: the result lines of an inline job once it is over."""
    ended = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    return {
        "id": batch.id,
        "object": "batch",
        "input_files": list(batch.input_file_ids),
        "metadata": batch.metadata,
        "endpoint": batch.endpoint,
        "model": batch.model,
        "agent_id": None,
        "output_file": batch.output_file_id,
        "error_file": batch.error_file_id,
        "errors": [{"message": str(e.get("message", "")), "count": 1} for e in batch.errors],
        "status": MISTRAL_STATUS[batch.status],
        "created_at": _ts(batch.created_at),
        "total_requests": batch.total,
        "completed_requests": batch.completed + batch.failed,
        "succeeded_requests": batch.completed,
        "failed_requests": batch.failed,
        "started_at": _ts(batch.in_progress_at),
        "completed_at": _ts(ended),
        "outputs": list(outputs) if outputs is not None else None,
    }


# ---------------------------------------------------------------------------------- OpenAI


def _expiry(value: dict[str, Any] | None) -> int | None:
    if value is None:
        return None
    seconds = value.get("seconds")
    if value.get("anchor", "created_at") != "created_at" or not isinstance(seconds, int):
        raise InvalidRequestError(
            "output_expires_after must be {'anchor': 'created_at', 'seconds': N}",
            param="output_expires_after",
        )
    return seconds


@router.post("/v1/batches", summary="Create a batch from an uploaded JSONL file (OpenAI)")
async def create_batch(body: CreateBatch, services: ServicesDep, principal: InferenceDep) -> JSONResponse:
    project_id = await caller_project(services, principal)
    batch = await services.batches.create(
        project_id,
        principal.key_id if principal is not None else None,
        api="openai",
        endpoint=body.endpoint,
        input_file_ids=[body.input_file_id],
        completion_window=body.completion_window,
        metadata=body.metadata,
        output_expires_after_s=_expiry(body.output_expires_after),
    )
    return JSONResponse(openai_json(batch))


@router.get("/v1/batches", summary="List the project's batches, newest first (OpenAI)")
async def list_batches(
    services: ServicesDep,
    principal: InferenceDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONResponse:
    project_id = await caller_project(services, principal)
    found, _ = await services.batches.list(project_id, after=after, limit=limit + 1)
    more, found = len(found) > limit, found[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": [openai_json(b) for b in found],
            "first_id": found[0].id if found else None,
            "last_id": found[-1].id if found else None,
            "has_more": more,
        }
    )


@router.get("/v1/batches/{batch_id}", summary="Retrieve a batch (OpenAI)")
async def retrieve_batch(batch_id: str, services: ServicesDep, principal: InferenceDep) -> JSONResponse:
    project_id = await caller_project(services, principal)
    return JSONResponse(openai_json(await services.batches.get(batch_id, project_id)))


@router.post("/v1/batches/{batch_id}/cancel", summary="Cancel a batch; finished lines are kept (OpenAI)")
async def cancel_batch(batch_id: str, services: ServicesDep, principal: InferenceDep) -> JSONResponse:
    project_id = await caller_project(services, principal)
    return JSONResponse(openai_json(await services.batches.cancel(batch_id, project_id)))


# ---------------------------------------------------------------------------------- Mistral


@router.post("/v1/batch/jobs", summary="Create a batch job from files or inline requests (Mistral)")
async def create_batch_job(
    body: CreateMistralBatch, services: ServicesDep, principal: InferenceDep
) -> JSONResponse:
    project_id = await caller_project(services, principal)
    batch = await services.batches.create(
        project_id,
        principal.key_id if principal is not None else None,
        api="mistral",
        endpoint=body.endpoint,
        input_file_ids=body.input_files or [],
        inline_requests=body.requests,
        completion_window=f"{body.timeout_hours}h",
        metadata=body.metadata,
        model=body.model,
    )
    return JSONResponse(mistral_json(batch))


@router.get("/v1/batch/jobs", summary="List the project's batch jobs (Mistral)")
async def list_batch_jobs(
    services: ServicesDep,
    principal: InferenceDep,
    page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    model: str | None = None,
    created_after: datetime | None = None,
    status: Annotated[list[str] | None, Query()] = None,
) -> JSONResponse:
    project_id = await caller_project(services, principal)
    statuses = [
        s for name in status or [] for s in _FROM_MISTRAL.get(name, [name] if name in STATUSES else [])
    ]
    if created_after is not None and created_after.tzinfo is None:
        created_after = created_after.replace(tzinfo=UTC)
    found, total = await services.batches.list(
        project_id,
        limit=page_size,
        offset=page * page_size,
        statuses=statuses or None,
        created_after=created_after,
        model=model,
    )
    return JSONResponse({"object": "list", "data": [mistral_json(b) for b in found], "total": total})


@router.get("/v1/batch/jobs/{job_id}", summary="Retrieve a batch job (Mistral)")
async def get_batch_job(job_id: str, services: ServicesDep, principal: InferenceDep) -> JSONResponse:
    project_id = await caller_project(services, principal)
    batch = await services.batches.get(job_id, project_id)
    return JSONResponse(mistral_json(batch, await services.batches.inline_outputs(batch)))


@router.post("/v1/batch/jobs/{job_id}/cancel", summary="Cancel a batch job (Mistral)")
async def cancel_batch_job(job_id: str, services: ServicesDep, principal: InferenceDep) -> JSONResponse:
    project_id = await caller_project(services, principal)
    return JSONResponse(mistral_json(await services.batches.cancel(job_id, project_id)))
