"""Metering: exactly one ledger row per request, whatever the outcome, and usage reports.

``record`` is an insert that ignores a duplicate request id (``ON CONFLICT DO NOTHING``), so the
pipeline may call it from every exit path (success, error, filter, disconnect) and a retry or a
second path can never create a second row or double-count. Reports are always scoped to one
project unless the caller explicitly asks for all projects (an admin-only view).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.engine import Connection

from alize.store.database import Database
from alize.store.ids import utc_now
from alize.store.models import UsageRow
from alize.store.repositories import GroupBy, UsageAggregate, UsageRepository, UsageWrites

__all__ = ["GroupBy", "MeteringService", "UsageAggregate", "UsageRecord", "UsageStatus", "to_csv"]


class UsageStatus(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    CONTENT_FILTERED = "content_filtered"
    CLIENT_DISCONNECTED = "client_disconnected"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    #: a fine-tuning job cancelled while training (billed for the tokens trained)
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What happened to one request. ``created_at`` defaults to the time of recording."""

    request_id: str
    project_id: str
    key_id: str | None
    deployment: str
    model: str
    status: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_micros: int = 0
    error_code: str | None = None
    latency_ms: int | None = None
    ttft_ms: int | None = None
    created_at: datetime | None = None
    #: the chat user of a chat-page reply (``erased:...`` once erased); empty for API calls
    user_id: str | None = None
    #: the deployment that served it (another than ``deployment`` after a fallback)
    served_by: str | None = None
    #: the deployments left on the way, as in the ``x-alize-fallback`` header
    fallback: str | None = None
    #: upstream calls retried on the way
    retries: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _record(row: UsageRow) -> UsageRecord:
    return UsageRecord(
        request_id=row.request_id,
        project_id=row.project_id,
        key_id=row.key_id,
        deployment=row.deployment,
        model=row.model,
        status=row.status,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_tokens=row.cached_tokens,
        cost_micros=row.cost_micros,
        error_code=row.error_code,
        latency_ms=row.latency_ms,
        ttft_ms=row.ttft_ms,
        created_at=row.created_at,
        user_id=row.user_id,
        served_by=row.served_by,
        fallback=row.fallback,
        retries=row.retries or 0,
    )


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (CSV injection)."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(items: list[UsageAggregate] | list[UsageRecord]) -> str:
    """Aggregates or ledger rows as CSV text with a header line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if items:
        rows = [asdict(item) for item in items]
        writer.writerow(rows[0].keys())
        for row in rows:
            writer.writerow(_cell(v) for v in row.values())
    return out.getvalue()


class MeteringService:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._db = db
        self._clock = clock

    async def record(
        self,
        usage: UsageRecord,
        *,
        then: Callable[[Connection, bool], object] | None = None,
    ) -> bool:
        """Write the request's ledger row; ``False`` (and no change) if its id is already there.
        ``then(connection, new)`` runs in the same transaction (the pipeline charges the budget
        there, so the row and its charge commit together or not at all). One transaction in one
        hop (``Database.run_sync``): it ends every request."""
        counts = (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            usage.cost_micros,
            usage.retries,
        )
        if min(counts) < 0:
            raise ValueError("token counts and cost must be >= 0")
        if not usage.request_id or not usage.status:
            raise ValueError("a usage record needs a request id and a status")
        values = {
            "request_id": usage.request_id,
            "project_id": usage.project_id,
            "key_id": usage.key_id,
            "user_id": usage.user_id,
            "deployment": usage.deployment,
            "model": usage.model,
            "status": str(usage.status),
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "cost_micros": usage.cost_micros,
            "error_code": usage.error_code,
            "latency_ms": usage.latency_ms,
            "ttft_ms": usage.ttft_ms,
            "created_at": usage.created_at or self._clock(),
            "served_by": usage.served_by,
            "fallback": usage.fallback,
            "retries": usage.retries,
        }

        def write(connection: Connection) -> bool:
            new = UsageWrites(connection).insert_once(values)
            if then is not None:
                then(connection, new)
            return new

        return await self._db.run_sync(write)

    async def purge_before(self, before: datetime) -> int:
        """Retention of the request log: delete ledger rows older than ``before``."""
        async with self._db.transaction() as session:
            return await UsageRepository(session).delete_before(before)

    async def get(self, request_id: str, *, project_id: str) -> UsageRecord | None:
        """One request's row, only if it belongs to ``project_id``."""
        async with self._db.transaction() as session:
            row = await UsageRepository(session).get(request_id)
            return _record(row) if row is not None and row.project_id == project_id else None

    async def report(
        self, project_id: str, start: datetime, end: datetime, group_by: GroupBy = "day"
    ) -> list[UsageAggregate]:
        """Totals of one project over ``[start, end)``, grouped by day/deployment/model/key."""
        async with self._db.transaction() as session:
            return await UsageRepository(session).aggregate(project_id, start, end, group_by)

    async def report_all_projects(
        self, start: datetime, end: datetime, group_by: GroupBy = "project"
    ) -> list[UsageAggregate]:
        """Totals across every project: for admin callers only (the caller checks)."""
        async with self._db.transaction() as session:
            return await UsageRepository(session).aggregate(None, start, end, group_by)

    async def rows(
        self, project_id: str, start: datetime, end: datetime, *, limit: int | None = None
    ) -> list[UsageRecord]:
        async with self._db.transaction() as session:
            return [
                _record(r) for r in await UsageRepository(session).rows(project_id, start, end, limit=limit)
            ]

    async def export_csv(
        self, project_id: str, start: datetime, end: datetime, group_by: GroupBy | None = None
    ) -> str:
        """CSV of one project's ledger rows, or of its aggregates when ``group_by`` is given."""
        if group_by is None:
            return to_csv(await self.rows(project_id, start, end))
        return to_csv(await self.report(project_id, start, end, group_by))
