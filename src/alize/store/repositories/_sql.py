"""Dialect helpers shared by repositories (the only place that knows SQLite from PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.models import Base


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def upsert_insert(session: AsyncSession, entity: type[Base]) -> Any:
    """An ``INSERT`` that supports ``on_conflict_do_nothing/do_update`` on the session's dialect."""
    return upsert_insert_for(dialect_name(session), entity)


def upsert_insert_for(dialect: str, entity: type[Base]) -> Any:
    """:func:`upsert_insert` for a dialect named (a synchronous connection's)."""
    if dialect == "postgresql":
        return postgresql.insert(entity)
    return sqlite.insert(entity)
