"""``/v1/files``: upload, list, retrieve, delete and download (OpenAI and Mistral clients).

Replies are OpenAI's FileObject with Mistral's extra fields (``sample_type``, ``num_lines``,
``source``), so either SDK reads them. Every route is scoped to the caller's project: another
project's file is a 404, exactly like one that never existed. Uploads are checked line by line
(:mod:`alize.jobs.jsonl`); problems come back as a 400 naming each line in ``error.errors``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from alize.api.auth import InferenceDep
from alize.api.deps import Services, ServicesDep
from alize.errors import InvalidRequestError
from alize.gateway.auth import Principal
from alize.jobs.files import MAX_EXPIRY_S, MIN_EXPIRY_S, FileObject

router = APIRouter(tags=["files"])


def cursor_page(data: list[dict[str, Any]], ids: list[str], has_more: bool, **extra: Any) -> dict[str, Any]:
    """OpenAI's cursor-paged list (files, batches): the page, its first and last ids (the next
    page's ``after`` is the last) and whether more follow."""
    return {
        "object": "list",
        "data": data,
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
        "has_more": has_more,
        **extra,
    }


async def caller_project(services: Services, principal: Principal | None) -> str:
    """The project a job route acts in: the key's, else (open mode) the default project."""
    if principal is not None:
        return principal.project_id
    return await services.tenancy.default_project_id()


def file_json(found: FileObject) -> dict[str, Any]:
    return {
        "id": found.id,
        "object": "file",
        "bytes": found.bytes,
        "created_at": int(found.created_at.timestamp()),
        "expires_at": int(found.expires_at.timestamp()) if found.expires_at else None,
        "filename": found.filename,
        "purpose": found.purpose,
        "status": "processed",
        "status_details": None,
        "sample_type": found.sample_type,
        "num_lines": found.num_lines,
        "source": found.source,
    }


@router.post("/v1/files", summary="Upload a JSONL file (batch input or fine-tuning data)")
async def upload_file(
    services: ServicesDep,
    principal: InferenceDep,
    file: Annotated[UploadFile, File(description="The JSONL file")],
    purpose: Annotated[str, Form(description="`batch` or `fine-tune`")],
    expires_after_anchor: Annotated[str | None, Form(alias="expires_after[anchor]")] = None,
    expires_after_seconds: Annotated[
        int | None, Form(alias="expires_after[seconds]", ge=MIN_EXPIRY_S, le=MAX_EXPIRY_S)
    ] = None,
) -> JSONResponse:
    if expires_after_anchor not in (None, "created_at"):
        raise InvalidRequestError("expires_after.anchor must be 'created_at'", param="expires_after")
    project_id = await caller_project(services, principal)
    try:
        found = await services.files.upload(
            project_id,
            file.file,
            filename=file.filename,
            purpose=purpose,
            expires_after_s=expires_after_seconds,
        )
    finally:
        await file.close()
    return JSONResponse(file_json(found))


@router.get("/v1/files", summary="List the project's files")
async def list_files(
    services: ServicesDep,
    principal: InferenceDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    page: Annotated[int, Query(ge=0, le=1_000_000, description="Mistral: page number (with page_size)")] = 0,
    page_size: Annotated[int | None, Query(ge=1, le=10_000, description="Mistral: page size")] = None,
) -> JSONResponse:
    project_id = await caller_project(services, principal)
    size = page_size or limit
    found, total = await services.files.list(
        project_id, purpose=purpose, after=after, limit=size + 1, offset=page * size, order=order
    )
    more, found = len(found) > size, found[:size]
    return JSONResponse(cursor_page([file_json(f) for f in found], [f.id for f in found], more, total=total))


@router.get("/v1/files/{file_id}", summary="Retrieve a file's description")
async def retrieve_file(file_id: str, services: ServicesDep, principal: InferenceDep) -> JSONResponse:
    project_id = await caller_project(services, principal)
    return JSONResponse(file_json(await services.files.get(file_id, project_id)))


@router.get("/v1/files/{file_id}/content", summary="Download a file's bytes")
async def file_content(file_id: str, services: ServicesDep, principal: InferenceDep) -> FileResponse:
    project_id = await caller_project(services, principal)
    found, path = await services.files.content_path(file_id, project_id)
    # octet-stream: what the Mistral SDK requires of a download (the OpenAI SDK takes any type)
    return FileResponse(path, media_type="application/octet-stream", filename=found.filename)


@router.delete("/v1/files/{file_id}", summary="Delete a file")
async def delete_file(file_id: str, services: ServicesDep, principal: InferenceDep) -> JSONResponse:
    project_id = await caller_project(services, principal)
    await services.batches.check_deletable(file_id, project_id)
    await services.files.delete(file_id, project_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
