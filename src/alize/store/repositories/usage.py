"""The metering ledger: one row per request id, and the aggregates usage reports are built from."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from alize.store.models import UsageRow
from alize.store.repositories._sql import dialect_name, upsert_insert_for

GroupBy = Literal["day", "deployment", "model", "key", "project"]


@dataclass(frozen=True, slots=True)
class UsageAggregate:
    """Totals of one group; ``group`` is a day (``YYYY-MM-DD``, UTC) or a deployment/model/key/project."""

    group: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_micros: int


@functools.cache
def _insert_once_for(dialect: str, columns: tuple[str, ...]) -> Any:
    """The idempotent insert of a row with these columns, built once (see
    :mod:`alize.store.repositories.budget` on why hot statements are); RETURNING, not rowcount:
    drivers disagree on rowcount for a skipped insert."""
    table = UsageRow.__table__
    return (
        upsert_insert_for(dialect, UsageRow)
        .values({name: sa.bindparam(f"v_{name}", type_=table.c[name].type) for name in columns})
        .on_conflict_do_nothing(index_elements=["request_id"])
        .returning(UsageRow.id)
    )


def _insert_once(dialect: str, values: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    statement = _insert_once_for(dialect, tuple(sorted(values)))
    return statement, {f"v_{name}": value for name, value in values.items()}


class UsageWrites:
    """The ledger's hot write on a synchronous connection (``Database.run_sync``)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def insert_once(self, values: dict[str, Any]) -> bool:
        """:meth:`UsageRepository.insert_once`: ``True`` if the row is new."""
        statement, params = _insert_once(self._connection.dialect.name, values)
        return self._connection.execute(statement, params).first() is not None


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def insert_once(self, values: dict[str, Any]) -> bool:
        """Insert a ledger row unless its ``request_id`` is already there; ``True`` if inserted."""
        result = await self._session.execute(*_insert_once(dialect_name(self._session), values))
        return result.scalar_one_or_none() is not None

    async def pseudonymise_user(self, user_id: str, pseudonym: str) -> int:
        """Erasure: the user's ledger rows stay (billing) under a pseudonym instead of their id."""
        result = await self._session.execute(
            sa.update(UsageRow)
            .where(UsageRow.user_id == user_id)
            .values(user_id=pseudonym)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def of_user(self, user_id: str, limit: int = 100_000) -> Sequence[UsageRow]:
        result = await self._session.execute(
            sa.select(UsageRow).where(UsageRow.user_id == user_id).order_by(UsageRow.created_at).limit(limit)
        )
        return result.scalars().all()

    async def delete_before(self, before: datetime) -> int:
        """Retention of the request log: ledger rows older than ``before``."""
        result = await self._session.execute(sa.delete(UsageRow).where(UsageRow.created_at < before))
        return int(getattr(result, "rowcount", 0) or 0)

    async def get(self, request_id: str) -> UsageRow | None:
        result = await self._session.execute(sa.select(UsageRow).where(UsageRow.request_id == request_id))
        return result.scalar_one_or_none()

    async def rows(
        self, project_id: str | None, start: datetime, end: datetime, *, limit: int | None = None
    ) -> Sequence[UsageRow]:
        """Ledger rows in ``[start, end)``, oldest first; ``project_id=None`` means every project."""
        query = sa.select(UsageRow).where(UsageRow.created_at >= start, UsageRow.created_at < end)
        if project_id is not None:
            query = query.where(UsageRow.project_id == project_id)
        query = query.order_by(UsageRow.created_at, UsageRow.id)
        if limit is not None:
            query = query.limit(limit)
        result = await self._session.execute(query)
        return result.scalars().all()

    def _group_column(self, group_by: GroupBy) -> Any:
        if group_by == "day":
            if dialect_name(self._session) == "postgresql":
                return sa.func.to_char(sa.func.timezone("UTC", UsageRow.created_at), "YYYY-MM-DD")
            # SQLite stores UTC text "YYYY-MM-DD HH:MM:SS.ffffff"
            return sa.func.substr(sa.cast(UsageRow.created_at, sa.String), 1, 10)
        columns: dict[str, Any] = {
            "deployment": UsageRow.deployment,
            "model": UsageRow.model,
            "key": sa.func.coalesce(UsageRow.key_id, ""),
            "project": UsageRow.project_id,
        }
        return columns[group_by]

    async def aggregate(
        self, project_id: str | None, start: datetime, end: datetime, group_by: GroupBy
    ) -> list[UsageAggregate]:
        """Totals per group over ``[start, end)``; ``project_id=None`` aggregates every project."""

        def total(column: Any) -> sa.ColumnElement[int]:
            # PostgreSQL's SUM(bigint) is numeric: cast back so Python sees int, never Decimal
            return sa.cast(sa.func.coalesce(sa.func.sum(column), 0), sa.BigInteger)

        group = self._group_column(group_by).label("grp")
        query = sa.select(
            group,
            sa.func.count().label("requests"),
            total(sa.case((UsageRow.status != "success", 1), else_=0)),
            total(UsageRow.prompt_tokens),
            total(UsageRow.completion_tokens),
            total(UsageRow.cached_tokens),
            total(UsageRow.cost_micros),
        ).where(UsageRow.created_at >= start, UsageRow.created_at < end)
        if project_id is not None:
            query = query.where(UsageRow.project_id == project_id)
        query = query.group_by(group).order_by(group)
        result = await self._session.execute(query)
        return [
            UsageAggregate(str(grp), int(n), int(err), int(p), int(c), int(cached), int(cost))
            for grp, n, err, p, c, cached, cost in result.all()
        ]
