"""Documents of a conversation: upload (multipart) and delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, UploadFile
from fastapi.encoders import jsonable_encoder

from alize.api.webchat.security import AppDep, WriterDep
from alize.errors import PayloadTooLargeError

router = APIRouter(prefix="/chat/api", tags=["chat web app"])


@router.post("/conversations/{conversation_id}/documents", summary="Upload a .txt, .md or .pdf document")
async def upload_document(
    conversation_id: str, file: UploadFile, session: WriterDep, services: AppDep
) -> Any:
    limit = services.chat.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"Files are limited to {limit} bytes.", param="file", code="file_too_large"
        )
    document = await services.chat.documents.upload(
        session.user.id, conversation_id, file.filename or "", data, project_id=session.user.project_id
    )
    return jsonable_encoder(document)


@router.delete("/conversations/{conversation_id}/documents/{document_id}", summary="Delete a document")
async def delete_document(
    conversation_id: str, document_id: str, session: WriterDep, services: AppDep
) -> dict[str, bool]:
    await services.chat.documents.delete(session.user.id, conversation_id, document_id)
    return {"deleted": True}
