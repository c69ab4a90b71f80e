"""Conversations, their messages, and saved agents, always scoped to one user.

A conversation that belongs to someone else raises the same 404 as one that does not exist,
so ids cannot be probed. Deleting a conversation deletes its messages, documents and chunks
(foreign keys cascade).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alize.errors import NotFoundError, ValidationFailedError
from alize.store.chat_models import ChatAgent, ChatConversation, ChatDocument, ChatMessage
from alize.store.database import Database
from alize.store.ids import new_id, utc_now
from alize.store.repositories.chat import (
    ChatAgentRepository,
    ConversationRepository,
    DocumentRepository,
    MessageRepository,
)

MAX_TITLE = 200
MAX_INSTRUCTIONS = 8000


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    id: str
    title: str
    model: str
    instructions: str
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MessageInfo:
    id: str
    seq: int
    role: str
    content: str
    model: str | None
    status: str
    citations: list[dict[str, Any]]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: str
    name: str
    media_type: str
    size_bytes: int
    pages: int | None
    embedding_model: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    conversation: ConversationInfo
    messages: list[MessageInfo] = field(default_factory=list)
    documents: list[DocumentInfo] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AgentInfo:
    id: str
    name: str
    instructions: str
    model: str


def conversation_info(row: ChatConversation) -> ConversationInfo:
    return ConversationInfo(
        id=row.id,
        title=row.title,
        model=row.model,
        instructions=row.instructions,
        settings=dict(row.settings or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def message_info(row: ChatMessage) -> MessageInfo:
    return MessageInfo(
        id=row.id,
        seq=row.seq,
        role=row.role,
        content=row.content,
        model=row.model,
        status=row.status,
        citations=list(row.citations or []),
        created_at=row.created_at,
    )


def document_info(row: ChatDocument) -> DocumentInfo:
    return DocumentInfo(
        id=row.id,
        name=row.name,
        media_type=row.media_type,
        size_bytes=row.size_bytes,
        pages=row.pages,
        embedding_model=row.embedding_model,
        created_at=row.created_at,
    )


def _not_found(conversation_id: str) -> NotFoundError:
    return NotFoundError(f"Conversation '{conversation_id}' not found.", code="conversation_not_found")


def _clean_title(title: str) -> str:
    title = " ".join(title.split())
    if not title:
        raise ValidationFailedError("a title cannot be empty", param="title")
    return title[:MAX_TITLE]


def _check_instructions(instructions: str) -> str:
    if len(instructions) > MAX_INSTRUCTIONS:
        raise ValidationFailedError(
            f"instructions are limited to {MAX_INSTRUCTIONS} characters", param="instructions"
        )
    return instructions


class ConversationService:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._db = db
        self._clock = clock

    async def create(
        self, user_id: str, *, model: str, title: str = "", instructions: str = ""
    ) -> ConversationInfo:
        now = self._clock()
        row = ChatConversation(
            id=new_id("conv"),
            user_id=user_id,
            title=_clean_title(title) if title.strip() else "",
            model=model,
            instructions=_check_instructions(instructions),
            settings={},
            created_at=now,
            updated_at=now,
        )
        async with self._db.transaction() as session:
            await ConversationRepository(session).add(row)
        return conversation_info(row)

    async def find(self, user_id: str, search: str | None = None) -> list[ConversationInfo]:
        async with self._db.transaction() as session:
            rows = await ConversationRepository(session).list(user_id, search.strip() if search else None)
            return [conversation_info(r) for r in rows]

    async def get(self, user_id: str, conversation_id: str) -> ConversationInfo:
        async with self._db.transaction() as session:
            row = await ConversationRepository(session).get(user_id, conversation_id)
            if row is None:
                raise _not_found(conversation_id)
            return conversation_info(row)

    async def detail(self, user_id: str, conversation_id: str) -> ConversationDetail:
        async with self._db.transaction() as session:
            row = await ConversationRepository(session).get(user_id, conversation_id)
            if row is None:
                raise _not_found(conversation_id)
            messages = await MessageRepository(session).list(conversation_id)
            documents = await DocumentRepository(session).list(conversation_id)
            return ConversationDetail(
                conversation_info(row),
                [message_info(m) for m in messages],
                [document_info(d) for d in documents],
            )

    async def update(
        self,
        user_id: str,
        conversation_id: str,
        *,
        title: str | None = None,
        model: str | None = None,
        instructions: str | None = None,
    ) -> ConversationInfo:
        async with self._db.transaction() as session:
            row = await ConversationRepository(session).get(user_id, conversation_id)
            if row is None:
                raise _not_found(conversation_id)
            if title is not None:
                row.title = _clean_title(title)
            if model is not None:
                row.model = model
            if instructions is not None:
                row.instructions = _check_instructions(instructions)
            row.updated_at = self._clock()
            await session.flush()
            return conversation_info(row)

    async def delete(self, user_id: str, conversation_id: str) -> None:
        async with self._db.transaction() as session:
            if not await ConversationRepository(session).delete(user_id, conversation_id):
                raise _not_found(conversation_id)

    async def add_message(
        self,
        user_id: str,
        conversation_id: str,
        *,
        role: str,
        content: str,
        model: str | None = None,
        status: str = "complete",
        citations: list[dict[str, Any]] | None = None,
        replace_from: int | None = None,
    ) -> MessageInfo:
        """Append a message; with ``replace_from`` first drop the message at that position and
        every later one (editing or regenerating)."""
        now = self._clock()
        async with self._db.transaction() as session:
            conversation = await ConversationRepository(session).get(user_id, conversation_id)
            if conversation is None:
                raise _not_found(conversation_id)
            messages = MessageRepository(session)
            if replace_from is not None:
                await messages.delete_from(conversation_id, replace_from)
            if not conversation.title and role == "user":
                conversation.title = _clean_title(content)[:60] if content.strip() else ""
            conversation.updated_at = now
            row = ChatMessage(
                id=new_id("msg"),
                conversation_id=conversation_id,
                seq=await messages.next_seq(conversation_id),
                role=role,
                content=content,
                model=model,
                status=status,
                citations=citations or [],
                created_at=now,
            )
            await messages.add(row)
            return message_info(row)

    async def truncate(self, user_id: str, conversation_id: str, from_seq: int) -> None:
        """Drop the message at ``from_seq`` and every later one."""
        async with self._db.transaction() as session:
            if await ConversationRepository(session).get(user_id, conversation_id) is None:
                raise _not_found(conversation_id)
            await MessageRepository(session).delete_from(conversation_id, from_seq)

    async def messages(self, user_id: str, conversation_id: str) -> list[MessageInfo]:
        return (await self.detail(user_id, conversation_id)).messages

    async def create_agent(self, user_id: str, *, name: str, instructions: str, model: str) -> AgentInfo:
        name = " ".join(name.split())[:200]
        if not name:
            raise ValidationFailedError("an agent needs a name", param="name")
        row = ChatAgent(
            id=new_id("agent"),
            user_id=user_id,
            name=name,
            instructions=_check_instructions(instructions),
            model=model,
            created_at=self._clock(),
        )
        async with self._db.transaction() as session:
            await ChatAgentRepository(session).add(row)
        return AgentInfo(row.id, row.name, row.instructions, row.model)

    async def agents(self, user_id: str) -> list[AgentInfo]:
        async with self._db.transaction() as session:
            return [
                AgentInfo(a.id, a.name, a.instructions, a.model)
                for a in await ChatAgentRepository(session).list(user_id)
            ]

    async def delete_agent(self, user_id: str, agent_id: str) -> None:
        async with self._db.transaction() as session:
            if not await ChatAgentRepository(session).delete(user_id, agent_id):
                raise NotFoundError(f"Agent '{agent_id}' not found.")
