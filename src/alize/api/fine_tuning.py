"""``/v1/fine_tuning/jobs`` (OpenAI and Mistral): create, list, retrieve, cancel, start, events,
checkpoints. The shapes and how the two APIs are told apart: :mod:`alize.api.fine_tuning_shapes`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import ValidationError

from alize.api.auth import InferenceDep
from alize.api.deps import Services, ServicesDep
from alize.api.fine_tuning_shapes import (
    dry_run_reply,
    is_mistral_body,
    mistral_job,
    mistral_request,
    openai_checkpoint,
    openai_event,
    openai_job,
    openai_request,
)
from alize.catalog.cards import readable_problems
from alize.errors import InvalidRequestError
from alize.gateway.auth import Principal, authorize_deployment
from alize.jobs.finetune.records import FineTuningJob
from alize.protocol.mistral.fine_tuning import MistralJobCreate
from alize.protocol.openai.fine_tuning import OpenAIJobCreate

router = APIRouter(tags=["fine-tuning"])
_JOBS = "/v1/fine_tuning/jobs"


async def _project(services: Services, principal: Principal | None) -> str:
    if principal is not None:
        return principal.project_id
    return await services.tenancy.default_project_id()


async def _shown(services: Services, job: FineTuningJob) -> dict[str, Any]:
    if job.api != "mistral":
        return openai_job(job)
    records = services.fine_tuning.records
    events = await records.events(job.id, job.project_id, limit=100, newest_first=False)
    checkpoints = await records.events(
        job.id, job.project_id, types=("checkpoint",), limit=100, newest_first=False
    )
    return mistral_job(job, events, checkpoints)


@router.post(_JOBS, summary="Create a fine-tuning job (OpenAI or Mistral body; Mistral's `dry_run`)")
async def create_job(
    body: Annotated[dict[str, Any], Body()],
    services: ServicesDep,
    principal: InferenceDep,
    dry_run: bool = False,
) -> dict[str, Any]:
    mistral = is_mistral_body(body)
    model_type: type[OpenAIJobCreate | MistralJobCreate] = MistralJobCreate if mistral else OpenAIJobCreate
    try:
        parsed = model_type.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        param = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
        raise InvalidRequestError(readable_problems(exc, "body"), param=param) from None
    request = mistral_request(parsed) if isinstance(parsed, MistralJobCreate) else openai_request(parsed)
    if principal is not None:
        authorize_deployment(principal, request.model)
    project = await _project(services, principal)
    if dry_run:
        return dry_run_reply(await services.fine_tuning.check(project, request))
    job = await services.fine_tuning.create(project, principal.key_id if principal else None, request)
    return await _shown(services, job)


@router.get(_JOBS, summary="List fine-tuning jobs (OpenAI `after`/`limit`, Mistral `page`/`page_size`)")
async def list_jobs(
    services: ServicesDep,
    principal: InferenceDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    page: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    page_size: Annotated[int | None, Query(ge=1, le=100)] = None,
) -> dict[str, Any]:
    project = await _project(services, principal)
    records = services.fine_tuning.records
    if page is not None or page_size is not None:  # Mistral's paging
        size = page_size or 100
        jobs, total = await records.list(project, limit=size, offset=(page or 0) * size)
        return {
            "object": "list",
            "data": [mistral_job(j) for j in jobs],
            "total": total,
            "has_more": (page or 0) * size + len(jobs) < total,
        }
    jobs, _ = await records.list(project, after=after, limit=limit + 1)
    return {"object": "list", "data": [openai_job(j) for j in jobs[:limit]], "has_more": len(jobs) > limit}


@router.get(_JOBS + "/{job_id}", summary="Retrieve a fine-tuning job")
async def get_job(job_id: str, services: ServicesDep, principal: InferenceDep) -> dict[str, Any]:
    job = await services.fine_tuning.records.get(job_id, await _project(services, principal))
    return await _shown(services, job)


@router.post(_JOBS + "/{job_id}/cancel", summary="Cancel a fine-tuning job")
async def cancel_job(job_id: str, services: ServicesDep, principal: InferenceDep) -> dict[str, Any]:
    job = await services.fine_tuning.cancel(job_id, await _project(services, principal))
    return await _shown(services, job)


@router.post(_JOBS + "/{job_id}/start", summary="Start a validated job (Mistral, auto_start false)")
async def start_job(job_id: str, services: ServicesDep, principal: InferenceDep) -> dict[str, Any]:
    job = await services.fine_tuning.start(job_id, await _project(services, principal))
    return await _shown(services, job)


@router.get(_JOBS + "/{job_id}/events", summary="A fine-tuning job's events, newest first")
async def list_events(
    job_id: str,
    services: ServicesDep,
    principal: InferenceDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    project = await _project(services, principal)
    events = await services.fine_tuning.records.events(job_id, project, after=after, limit=limit + 1)
    return {
        "object": "list",
        "data": [openai_event(e) for e in events[:limit]],
        "has_more": len(events) > limit,
    }


@router.get(_JOBS + "/{job_id}/checkpoints", summary="A fine-tuning job's checkpoints, newest first")
async def list_checkpoints(
    job_id: str,
    services: ServicesDep,
    principal: InferenceDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    project = await _project(services, principal)
    records = services.fine_tuning.records
    job = await records.get(job_id, project)
    found = await records.events(job_id, project, types=("checkpoint",), after=after, limit=limit + 1)
    data = [openai_checkpoint(job, e) for e in found[:limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": len(found) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
