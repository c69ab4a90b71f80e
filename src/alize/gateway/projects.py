"""Projects (tenants): create, list, update limits and budget, delete.

A project's limits apply to all its keys together (each key may have tighter ones of its own);
its monthly budget is enforced by ``alize.gateway.budget``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from alize.errors import ConflictError, NotFoundError, ValidationFailedError
from alize.gateway.limits import LimitSpec
from alize.store.database import Database
from alize.store.ids import new_id, utc_now
from alize.store.models import Project
from alize.store.repositories import ProjectRepository


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    id: str
    name: str
    monthly_budget_micros: int | None
    currency: str
    limits: LimitSpec
    created_at: datetime


def _info(row: Project) -> ProjectInfo:
    return ProjectInfo(
        id=row.id,
        name=row.name,
        monthly_budget_micros=row.monthly_budget_micros,
        currency=row.currency,
        limits=LimitSpec(row.rpm_limit, row.tpm_limit, row.concurrency_limit),
        created_at=row.created_at,
    )


def _check(budget: int | None, limits: LimitSpec) -> None:
    if budget is not None and budget < 0:
        raise ValidationFailedError("monthly_budget_micros must be >= 0", param="monthly_budget_micros")
    for name, value in (("rpm", limits.rpm), ("tpm", limits.tpm), ("concurrency", limits.concurrency)):
        if value is not None and value < 0:
            raise ValidationFailedError(f"{name} limit must be >= 0", param=name)


class ProjectService:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._db = db
        self._clock = clock

    async def create(
        self,
        name: str,
        *,
        monthly_budget_micros: int | None = None,
        currency: str = "USD",
        limits: LimitSpec | None = None,
    ) -> ProjectInfo:
        limits = limits or LimitSpec()
        _check(monthly_budget_micros, limits)
        if not name.strip():
            raise ValidationFailedError("a project needs a name", param="name")
        row = Project(
            id=new_id("proj"),
            name=name,
            monthly_budget_micros=monthly_budget_micros,
            currency=currency,
            rpm_limit=limits.rpm,
            tpm_limit=limits.tpm,
            concurrency_limit=limits.concurrency,
            created_at=self._clock(),
        )
        try:
            async with self._db.transaction() as session:
                await ProjectRepository(session).add(row)
        except IntegrityError:
            raise ConflictError(f"A project named '{name}' already exists.", param="name") from None
        return _info(row)

    async def get(self, project_id: str) -> ProjectInfo:
        async with self._db.transaction() as session:
            row = await ProjectRepository(session).get(project_id)
            if row is None:
                raise NotFoundError(f"Project '{project_id}' not found.")
            return _info(row)

    async def get_by_name(self, name: str) -> ProjectInfo | None:
        async with self._db.transaction() as session:
            row = await ProjectRepository(session).get_by_name(name)
            return _info(row) if row is not None else None

    async def list(self) -> list[ProjectInfo]:
        async with self._db.transaction() as session:
            return [_info(row) for row in await ProjectRepository(session).list()]

    async def update(
        self,
        project_id: str,
        *,
        monthly_budget_micros: int | None,
        limits: LimitSpec,
    ) -> ProjectInfo:
        """Replace the budget and limits (``None`` = unlimited). Keys see new limits within the
        key cache TTL."""
        _check(monthly_budget_micros, limits)
        async with self._db.transaction() as session:
            row = await ProjectRepository(session).get(project_id)
            if row is None:
                raise NotFoundError(f"Project '{project_id}' not found.")
            row.monthly_budget_micros = monthly_budget_micros
            row.rpm_limit, row.tpm_limit, row.concurrency_limit = limits.rpm, limits.tpm, limits.concurrency
            await session.flush()
            return _info(row)

    async def delete(self, project_id: str) -> None:
        """Delete a project and its keys; its usage ledger rows are kept as history."""
        async with self._db.transaction() as session:
            if not await ProjectRepository(session).delete(project_id):
                raise NotFoundError(f"Project '{project_id}' not found.")
