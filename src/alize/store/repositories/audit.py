"""The hash-chained audit log table."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.models import AuditEntry
from alize.store.repositories._sql import dialect_name

#: PostgreSQL advisory lock key that serialises appenders across processes ("audit")
_AUDIT_LOCK_KEY = 0x6175646974


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock_chain(self) -> None:
        """Serialise appenders until the transaction ends.

        PostgreSQL: a transaction-scoped advisory lock. SQLite: transactions already begin with
        ``BEGIN IMMEDIATE`` and so hold the database write lock.
        """
        if dialect_name(self._session) == "postgresql":
            await self._session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _AUDIT_LOCK_KEY})

    async def last(self) -> AuditEntry | None:
        result = await self._session.execute(sa.select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))
        return result.scalar_one_or_none()

    async def add(self, entry: AuditEntry) -> None:
        self._session.add(entry)
        await self._session.flush()

    async def after(self, seq: int, limit: int) -> Sequence[AuditEntry]:
        """Entries with ``seq > seq`` in order: for walking the whole chain in batches."""
        result = await self._session.execute(
            sa.select(AuditEntry)
            .where(AuditEntry.seq > seq)
            .order_by(AuditEntry.seq)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        return result.scalars().all()

    async def recent(self, limit: int, before_seq: int | None = None) -> Sequence[AuditEntry]:
        query = sa.select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
        if before_seq is not None:
            query = query.where(AuditEntry.seq < before_seq)
        result = await self._session.execute(query)
        return result.scalars().all()
