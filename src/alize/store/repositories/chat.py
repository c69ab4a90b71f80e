"""Repositories of the chat web app. Every conversation query is scoped by ``user_id``: a
conversation someone else owns is indistinguishable from one that does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.chat_models import (
    ChatAgent,
    ChatChunk,
    ChatConversation,
    ChatDocument,
    ChatMessage,
    ChatSession,
    ChatUser,
)


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class ChatUserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, user: ChatUser) -> None:
        self._session.add(user)
        await self._session.flush()

    async def get(self, user_id: str) -> ChatUser | None:
        return await self._session.get(ChatUser, user_id)

    async def get_by_email(self, email: str) -> ChatUser | None:
        result = await self._session.execute(sa.select(ChatUser).where(ChatUser.email == email))
        return result.scalar_one_or_none()

    async def list(self, project_id: str | None = None, limit: int = 10_000) -> Sequence[ChatUser]:
        query = sa.select(ChatUser).order_by(ChatUser.created_at, ChatUser.id).limit(limit)
        if project_id is not None:
            query = query.where(ChatUser.project_id == project_id)
        return (await self._session.execute(query)).scalars().all()

    async def footprint(self, user_id: str) -> dict[str, int]:
        """How many rows of each kind hang off this user (what erasing them removes)."""
        conversations = sa.select(ChatConversation.id).where(ChatConversation.user_id == user_id)
        documents = sa.select(ChatDocument.id).where(ChatDocument.conversation_id.in_(conversations))
        counts = {
            "conversations": sa.select(sa.func.count()).select_from(conversations.subquery()),
            "messages": sa.select(sa.func.count())
            .select_from(ChatMessage)
            .where(ChatMessage.conversation_id.in_(conversations)),
            "documents": sa.select(sa.func.count()).select_from(documents.subquery()),
            "chunks": sa.select(sa.func.count())
            .select_from(ChatChunk)
            .where(ChatChunk.document_id.in_(documents)),
            "sessions": sa.select(sa.func.count())
            .select_from(ChatSession)
            .where(ChatSession.user_id == user_id),
            "agents": sa.select(sa.func.count()).select_from(ChatAgent).where(ChatAgent.user_id == user_id),
        }
        return {name: int((await self._session.execute(q)).scalar() or 0) for name, q in counts.items()}

    async def delete(self, user_id: str) -> bool:
        """Delete the user; every row of theirs goes with it (``ON DELETE CASCADE``)."""
        result = await self._session.execute(sa.delete(ChatUser).where(ChatUser.id == user_id))
        return _rowcount(result) > 0


class ChatSessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: ChatSession) -> None:
        self._session.add(row)
        await self._session.flush()

    async def get_live(self, token_hash: str, now: datetime) -> tuple[ChatSession, ChatUser] | None:
        result = await self._session.execute(
            sa.select(ChatSession, ChatUser)
            .join(ChatUser, ChatUser.id == ChatSession.user_id)
            .where(
                ChatSession.token_hash == token_hash,
                ChatSession.expires_at > now,
                ChatUser.disabled_at.is_(None),
            )
        )
        row = result.first()
        return (row[0], row[1]) if row is not None else None

    async def delete(self, token_hash: str) -> bool:
        result = await self._session.execute(
            sa.delete(ChatSession).where(ChatSession.token_hash == token_hash)
        )
        return _rowcount(result) > 0

    async def delete_of_user(self, user_id: str) -> int:
        return _rowcount(
            await self._session.execute(sa.delete(ChatSession).where(ChatSession.user_id == user_id))
        )

    async def of_user(self, user_id: str) -> Sequence[ChatSession]:
        result = await self._session.execute(
            sa.select(ChatSession).where(ChatSession.user_id == user_id).order_by(ChatSession.created_at)
        )
        return result.scalars().all()

    async def delete_expired(self, now: datetime) -> int:
        return _rowcount(
            await self._session.execute(sa.delete(ChatSession).where(ChatSession.expires_at <= now))
        )


class ChatAgentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, agent: ChatAgent) -> None:
        self._session.add(agent)
        await self._session.flush()

    async def list(self, user_id: str) -> Sequence[ChatAgent]:
        result = await self._session.execute(
            sa.select(ChatAgent).where(ChatAgent.user_id == user_id).order_by(ChatAgent.name, ChatAgent.id)
        )
        return result.scalars().all()

    async def get(self, user_id: str, agent_id: str) -> ChatAgent | None:
        result = await self._session.execute(
            sa.select(ChatAgent).where(ChatAgent.id == agent_id, ChatAgent.user_id == user_id)
        )
        return result.scalar_one_or_none()

    async def delete(self, user_id: str, agent_id: str) -> bool:
        result = await self._session.execute(
            sa.delete(ChatAgent).where(ChatAgent.id == agent_id, ChatAgent.user_id == user_id)
        )
        return _rowcount(result) > 0


class ConversationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, conversation: ChatConversation) -> None:
        self._session.add(conversation)
        await self._session.flush()

    async def get(self, user_id: str, conversation_id: str) -> ChatConversation | None:
        result = await self._session.execute(
            sa.select(ChatConversation).where(
                ChatConversation.id == conversation_id, ChatConversation.user_id == user_id
            )
        )
        return result.scalar_one_or_none()

    async def list(
        self, user_id: str, search: str | None = None, limit: int = 200
    ) -> Sequence[ChatConversation]:
        query = sa.select(ChatConversation).where(ChatConversation.user_id == user_id)
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(sa.func.lower(ChatConversation.title).like(f"%{escaped}%", escape="\\"))
        query = query.order_by(ChatConversation.updated_at.desc(), ChatConversation.id).limit(limit)
        return (await self._session.execute(query)).scalars().all()

    async def delete_idle_before(self, before: datetime) -> int:
        """Retention: conversations untouched since ``before`` (their messages and documents too)."""
        return _rowcount(
            await self._session.execute(
                sa.delete(ChatConversation).where(ChatConversation.updated_at < before)
            )
        )

    async def delete(self, user_id: str, conversation_id: str) -> bool:
        result = await self._session.execute(
            sa.delete(ChatConversation).where(
                ChatConversation.id == conversation_id, ChatConversation.user_id == user_id
            )
        )
        return _rowcount(result) > 0


class MessageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, message: ChatMessage) -> None:
        self._session.add(message)
        await self._session.flush()

    async def list(self, conversation_id: str) -> Sequence[ChatMessage]:
        result = await self._session.execute(
            sa.select(ChatMessage)
            .where(ChatMessage.conversation_id == conversation_id)
            .order_by(ChatMessage.seq)
        )
        return result.scalars().all()

    async def get(self, conversation_id: str, message_id: str) -> ChatMessage | None:
        result = await self._session.execute(
            sa.select(ChatMessage).where(
                ChatMessage.id == message_id, ChatMessage.conversation_id == conversation_id
            )
        )
        return result.scalar_one_or_none()

    async def next_seq(self, conversation_id: str) -> int:
        result = await self._session.execute(
            sa.select(sa.func.max(ChatMessage.seq)).where(ChatMessage.conversation_id == conversation_id)
        )
        current = result.scalar()
        return 0 if current is None else int(current) + 1

    async def delete_from(self, conversation_id: str, seq: int) -> int:
        """Delete the message at ``seq`` and every later one (edit, regenerate)."""
        result = await self._session.execute(
            sa.delete(ChatMessage).where(
                ChatMessage.conversation_id == conversation_id, ChatMessage.seq >= seq
            )
        )
        return _rowcount(result)


class DocumentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, document: ChatDocument, chunks: Sequence[ChatChunk]) -> None:
        self._session.add(document)
        await self._session.flush()
        self._session.add_all(list(chunks))
        await self._session.flush()

    async def list(self, conversation_id: str) -> Sequence[ChatDocument]:
        result = await self._session.execute(
            sa.select(ChatDocument)
            .where(ChatDocument.conversation_id == conversation_id)
            .order_by(ChatDocument.created_at, ChatDocument.id)
        )
        return result.scalars().all()

    async def count(self, conversation_id: str) -> int:
        result = await self._session.execute(
            sa.select(sa.func.count())
            .select_from(ChatDocument)
            .where(ChatDocument.conversation_id == conversation_id)
        )
        return int(result.scalar() or 0)

    async def chunks(self, conversation_id: str) -> Sequence[tuple[ChatChunk, ChatDocument]]:
        result = await self._session.execute(
            sa.select(ChatChunk, ChatDocument)
            .join(ChatDocument, ChatDocument.id == ChatChunk.document_id)
            .where(ChatDocument.conversation_id == conversation_id)
            .order_by(ChatDocument.created_at, ChatChunk.document_id, ChatChunk.seq)
        )
        return [(row[0], row[1]) for row in result.all()]

    async def delete_uploaded_before(self, before: datetime) -> int:
        """Retention: documents uploaded before ``before`` (their passages too)."""
        return _rowcount(
            await self._session.execute(sa.delete(ChatDocument).where(ChatDocument.created_at < before))
        )

    async def delete(self, conversation_id: str, document_id: str) -> bool:
        result = await self._session.execute(
            sa.delete(ChatDocument).where(
                ChatDocument.id == document_id, ChatDocument.conversation_id == conversation_id
            )
        )
        return _rowcount(result) > 0
