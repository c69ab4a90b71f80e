"""Conversations, agents and models of the logged-in user (``/chat/api/conversations`` ...).

Every route reads the conversation through the user's own scope: another user's id is a 404.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response
from pydantic import BaseModel, Field

from alize.api.webchat.security import AppDep, ReaderDep, WriterDep
from alize.chat.export import to_json, to_markdown
from alize.errors import ModelNotFoundError

router = APIRouter(prefix="/chat/api", tags=["chat web app"])


class NewConversation(BaseModel):
    title: str = Field("", max_length=200)
    model: str | None = Field(None, max_length=200)
    instructions: str = Field("", max_length=8000)


class ConversationPatch(BaseModel):
    title: str | None = Field(None, max_length=200)
    model: str | None = Field(None, max_length=200)
    instructions: str | None = Field(None, max_length=8000)


class NewAgent(BaseModel):
    name: str = Field(max_length=200)
    instructions: str = Field("", max_length=8000)
    model: str = Field(max_length=200)


def _check_model(services: AppDep, model: str) -> None:
    if model not in services.chat.chat_models():
        raise ModelNotFoundError(model)


@router.get("/models", summary="Models a conversation can use")
async def list_models(_: ReaderDep, services: AppDep) -> dict[str, Any]:
    return {"models": services.chat.chat_models(), "default": services.chat.default_model()}


@router.get("/conversations", summary="The user's conversations, newest first; ?q= searches titles")
async def list_conversations(
    session: ReaderDep, services: AppDep, q: str | None = Query(None, max_length=200)
) -> dict[str, Any]:
    found = await services.chat.conversations.find(session.user.id, q)
    return {"data": jsonable_encoder(found)}


@router.post("/conversations", summary="Start a conversation")
async def create_conversation(body: NewConversation, session: WriterDep, services: AppDep) -> Any:
    model = body.model or services.chat.default_model() or services.settings.default_model
    _check_model(services, model)
    created = await services.chat.conversations.create(
        session.user.id, model=model, title=body.title, instructions=body.instructions
    )
    return jsonable_encoder(created)


@router.get("/conversations/{conversation_id}", summary="A conversation with its messages and documents")
async def get_conversation(conversation_id: str, session: ReaderDep, services: AppDep) -> Any:
    return jsonable_encoder(await services.chat.conversations.detail(session.user.id, conversation_id))


@router.patch("/conversations/{conversation_id}", summary="Rename, change model or instructions")
async def update_conversation(
    conversation_id: str, body: ConversationPatch, session: WriterDep, services: AppDep
) -> Any:
    if body.model is not None:
        _check_model(services, body.model)
    updated = await services.chat.conversations.update(
        session.user.id, conversation_id, title=body.title, model=body.model, instructions=body.instructions
    )
    return jsonable_encoder(updated)


@router.delete(
    "/conversations/{conversation_id}", summary="Delete a conversation, its messages and documents"
)
async def delete_conversation(conversation_id: str, session: WriterDep, services: AppDep) -> dict[str, bool]:
    await services.chat.conversations.delete(session.user.id, conversation_id)
    return {"deleted": True}


@router.get("/conversations/{conversation_id}/export", summary="Download a conversation as Markdown or JSON")
async def export_conversation(
    conversation_id: str,
    session: ReaderDep,
    services: AppDep,
    format: Literal["markdown", "json"] = "markdown",
) -> Response:
    detail = await services.chat.conversations.detail(session.user.id, conversation_id)
    if format == "json":
        body, media, ext = to_json(detail), "application/json", "json"
    else:
        body, media, ext = to_markdown(detail), "text/markdown; charset=utf-8", "md"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="conversation-{conversation_id}.{ext}"'},
    )


@router.get("/agents", summary="The user's saved agents")
async def list_agents(session: ReaderDep, services: AppDep) -> dict[str, Any]:
    return {"data": jsonable_encoder(await services.chat.conversations.agents(session.user.id))}


@router.post("/agents", summary="Save an agent (name, instructions, model)")
async def create_agent(body: NewAgent, session: WriterDep, services: AppDep) -> Any:
    _check_model(services, body.model)
    agent = await services.chat.conversations.create_agent(
        session.user.id, name=body.name, instructions=body.instructions, model=body.model
    )
    return jsonable_encoder(agent)


@router.delete("/agents/{agent_id}", summary="Delete a saved agent")
async def delete_agent(agent_id: str, session: WriterDep, services: AppDep) -> dict[str, bool]:
    await services.chat.conversations.delete_agent(session.user.id, agent_id)
    return {"deleted": True}
