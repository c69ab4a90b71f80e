"""Streaming replies: ``POST .../messages`` (send or edit) and ``POST .../regenerate``.

The answer is a ``text/event-stream`` of JSON events (see ``alize.chat.replies``), read by the
page with ``fetch`` (so the session cookie and CSRF header go with it). When the user stops,
the page aborts the fetch; the response then closes the event stream and calls
``ReplyRun.finish``, which closes the generation (freeing the engine slot) and saves the
partial reply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field

from alize.api.streaming import ClosingStreamingResponse
from alize.api.webchat.security import AppDep, WriterDep
from alize.chat.replies import ReplyRun
from alize.errors import AlizeError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/chat/api", tags=["chat web app"])

Language = Literal["en", "fr", "de", "es", "it"]


class SendBody(BaseModel):
    content: str = Field(min_length=1, max_length=32_000)
    model: str | None = Field(None, max_length=200)
    #: the interface language, used when the message's own language cannot be told
    language: Language | None = None
    #: edit this (user) message instead of appending: it and every later message are replaced
    edit_message_id: str | None = Field(None, max_length=40)


class RegenerateBody(BaseModel):
    model: str | None = Field(None, max_length=200)
    language: Language | None = None


async def _encode(run: ReplyRun) -> AsyncIterator[bytes]:
    try:
        async for event in run.events():
            yield f"data: {json.dumps(jsonable_encoder(event), ensure_ascii=False)}\n\n".encode()
    except Exception as exc:  # an unexpected failure still ends the stream with an error event
        log.exception("chat reply failed", exc_info=exc)
        error = AlizeError("internal server error").to_dict()
        yield f"data: {json.dumps({'type': 'error', 'error': error})}\n\n".encode()


def _respond(run: ReplyRun) -> ClosingStreamingResponse:
    async def on_close() -> None:
        await run.finish()

    return ClosingStreamingResponse(
        _encode(run), on_close=on_close, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


@router.post(
    "/conversations/{conversation_id}/messages", summary="Send (or edit) a message; streams the reply"
)
async def send_message(
    conversation_id: str, body: SendBody, session: WriterDep, services: AppDep
) -> ClosingStreamingResponse:
    run = await services.chat.replies.send(
        session.user.id,
        conversation_id,
        body.content,
        model=body.model,
        language=body.language,
        edit_message_id=body.edit_message_id,
        project_id=session.user.project_id,
    )
    return _respond(run)


@router.post("/conversations/{conversation_id}/regenerate", summary="Answer the last message again (streams)")
async def regenerate(
    conversation_id: str, body: RegenerateBody, session: WriterDep, services: AppDep
) -> ClosingStreamingResponse:
    run = await services.chat.replies.regenerate(
        session.user.id,
        conversation_id,
        model=body.model,
        language=body.language,
        project_id=session.user.project_id,
    )
    return _respond(run)
