"""Tables of the chat web app: people who log in, their sessions, conversations and documents.

Kept apart from ``alize.store.models`` (tenancy and metering) but on the same ``Base``, so one
metadata describes the whole schema and Alembic revision ``0002`` creates exactly these tables.
Every row hangs off a user with ``ON DELETE CASCADE``: deleting a conversation really deletes
its messages, documents and chunks, on SQLite (foreign keys are switched on per connection) and
PostgreSQL alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from alize.store.models import Base
from alize.store.types import UTCDateTime

JSONValue = dict[str, Any]


class ChatUser(Base):
    """A person with a password (argon2 hash only), belonging to one project."""

    __tablename__ = "chat_users"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    #: interface language chosen by the user (``en``, ``fr``...); empty = follow the browser
    language: Mapped[str | None] = mapped_column(sa.String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChatSession(Base):
    """A login. Only SHA-256 digests of the cookie token and of the CSRF token are kept."""

    __tablename__ = "chat_sessions"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("chat_users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    csrf_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChatAgent(Base):
    """A saved assistant: a name, instructions and a model, reusable across conversations."""

    __tablename__ = "chat_agents"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("chat_users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    instructions: Mapped[str] = mapped_column(sa.Text)
    model: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChatConversation(Base):
    """One conversation: its model, instructions (system prompt) and sampling settings."""

    __tablename__ = "chat_conversations"
    __table_args__ = (sa.Index("ix_chat_conversations_user_id_updated_at", "user_id", "updated_at"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("chat_users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(sa.String(200))
    model: Mapped[str] = mapped_column(sa.String(200))
    instructions: Mapped[str] = mapped_column(sa.Text)
    settings: Mapped[JSONValue] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChatMessage(Base):
    """A message; ``seq`` orders a conversation. ``status`` tells a stopped reply from a full one."""

    __tablename__ = "chat_messages"
    __table_args__ = (sa.UniqueConstraint("conversation_id", "seq"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("chat_conversations.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(sa.Integer)
    role: Mapped[str] = mapped_column(sa.String(16))
    content: Mapped[str] = mapped_column(sa.Text)
    model: Mapped[str | None] = mapped_column(sa.String(200))
    #: ``complete``, ``stopped`` (the user stopped it) or ``error``
    status: Mapped[str] = mapped_column(sa.String(16))
    #: the passages the reply drew on: ``[{"n", "chunk_id", "document", "text"}]``
    citations: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChatDocument(Base):
    """An uploaded file; its text lives in chunks. ``embedding_model`` is empty when the chunks
    were stored without vectors (retrieval then ranks them lexically)."""

    __tablename__ = "chat_documents"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("chat_conversations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255))
    media_type: Mapped[str] = mapped_column(sa.String(100))
    size_bytes: Mapped[int] = mapped_column(sa.Integer)
    pages: Mapped[int | None] = mapped_column(sa.Integer)
    embedding_model: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChatChunk(Base):
    """A passage of a document, with its embedding as little-endian float32 bytes (or none)."""

    __tablename__ = "chat_chunks"
    __table_args__ = (sa.UniqueConstraint("document_id", "seq"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    document_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("chat_documents.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(sa.Integer)
    text: Mapped[str] = mapped_column(sa.Text)
    embedding: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
