"""Chat web app: users, sessions, agents, conversations, messages, documents and chunks.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id(name: str = "id") -> sa.Column[object]:
    return sa.Column(name, sa.String(40), nullable=False)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "chat_users",
        _id(),
        _id("project_id"),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("language", sa.String(8), nullable=True),
        _ts("created_at"),
        _ts("disabled_at", nullable=True),
        _fk("chat_users", "project_id", "projects"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_users"),
        sa.UniqueConstraint("email", name="uq_chat_users_email"),
    )
    op.create_index("ix_chat_users_project_id", "chat_users", ["project_id"])
    op.create_table(
        "chat_sessions",
        _id(),
        _id("user_id"),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("csrf_hash", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _fk("chat_sessions", "user_id", "chat_users"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_chat_sessions_token_hash"),
    )
    op.create_index("ix_chat_sessions_user_id", "chat_sessions", ["user_id"])
    op.create_table(
        "chat_agents",
        _id(),
        _id("user_id"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        _ts("created_at"),
        _fk("chat_agents", "user_id", "chat_users"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_agents"),
    )
    op.create_index("ix_chat_agents_user_id", "chat_agents", ["user_id"])
    op.create_table(
        "chat_conversations",
        _id(),
        _id("user_id"),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _fk("chat_conversations", "user_id", "chat_users"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_conversations"),
    )
    op.create_index(
        "ix_chat_conversations_user_id_updated_at", "chat_conversations", ["user_id", "updated_at"]
    )
    op.create_table(
        "chat_messages",
        _id(),
        _id("conversation_id"),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("citations", sa.JSON(), nullable=False),
        _ts("created_at"),
        _fk("chat_messages", "conversation_id", "chat_conversations"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_chat_messages_conversation_id_seq"),
    )
    op.create_table(
        "chat_documents",
        _id(),
        _id("conversation_id"),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("media_type", sa.String(100), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("embedding_model", sa.String(200), nullable=True),
        _ts("created_at"),
        _fk("chat_documents", "conversation_id", "chat_conversations"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_documents"),
    )
    op.create_index("ix_chat_documents_conversation_id", "chat_documents", ["conversation_id"])
    op.create_table(
        "chat_chunks",
        _id(),
        _id("document_id"),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        _fk("chat_chunks", "document_id", "chat_documents"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_chunks"),
        sa.UniqueConstraint("document_id", "seq", name="uq_chat_chunks_document_id_seq"),
    )


def downgrade() -> None:
    op.drop_table("chat_chunks")
    op.drop_index("ix_chat_documents_conversation_id", table_name="chat_documents")
    op.drop_table("chat_documents")
    op.drop_table("chat_messages")
    op.drop_index("ix_chat_conversations_user_id_updated_at", table_name="chat_conversations")
    op.drop_table("chat_conversations")
    op.drop_index("ix_chat_agents_user_id", table_name="chat_agents")
    op.drop_table("chat_agents")
    op.drop_index("ix_chat_sessions_user_id", table_name="chat_sessions")
    op.drop_table("chat_sessions")
    op.drop_index("ix_chat_users_project_id", table_name="chat_users")
    op.drop_table("chat_users")
