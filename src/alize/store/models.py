"""The tables, as typed SQLAlchemy 2.0 mappings.

These classes describe the schema; the schema itself is created and evolved only by the Alembic
revisions in ``alize.store.migrations`` (a test checks that both agree). Money is held in
integer micro-units and tokens as integers: no floats anywhere in the ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from alize.store.types import BigIntId, UTCDateTime

#: deterministic constraint names, so migrations can refer to them on every backend
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONValue = dict[str, Any]


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    """A tenant: keys, limits, budget and usage all hang off a project."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    monthly_budget_micros: Mapped[int | None] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(8))
    rpm_limit: Mapped[int | None] = mapped_column(sa.Integer)
    tpm_limit: Mapped[int | None] = mapped_column(sa.Integer)
    concurrency_limit: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """An API key. Only ``prefix`` (shown to people) and a salted hash of the secret are kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    prefix: Mapped[str] = mapped_column(sa.String(40), unique=True)
    salt: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(128))
    #: space-separated scopes, e.g. ``"inference"`` or ``"admin inference"``
    scopes: Mapped[str] = mapped_column(sa.String(100))
    allowed_deployments: Mapped[list[str] | None] = mapped_column(sa.JSON)
    rpm_limit: Mapped[int | None] = mapped_column(sa.Integer)
    tpm_limit: Mapped[int | None] = mapped_column(sa.Integer)
    concurrency_limit: Mapped[int | None] = mapped_column(sa.Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UsageRow(Base):
    """The metering ledger: exactly one row per request id, whatever the outcome.

    No foreign key to projects: the ledger is history and must outlive a deleted project.
    """

    __tablename__ = "usage"
    __table_args__ = (sa.Index("ix_usage_project_id_created_at", "project_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(sa.String(100), unique=True)
    project_id: Mapped[str] = mapped_column(sa.String(40))
    key_id: Mapped[str | None] = mapped_column(sa.String(40))
    #: the chat user of a chat-page reply; a pseudonym (``erased:...``) once the user is erased
    user_id: Mapped[str | None] = mapped_column(sa.String(100), index=True)
    deployment: Mapped[str] = mapped_column(sa.String(200))
    model: Mapped[str] = mapped_column(sa.String(200))
    prompt_tokens: Mapped[int] = mapped_column(sa.Integer)
    completion_tokens: Mapped[int] = mapped_column(sa.Integer)
    cached_tokens: Mapped[int] = mapped_column(sa.Integer)
    cost_micros: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(40))
    error_code: Mapped[str | None] = mapped_column(sa.String(100))
    latency_ms: Mapped[int | None] = mapped_column(sa.Integer)
    ttft_ms: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: the deployment that served it, when a generation started (another one after a fallback)
    served_by: Mapped[str | None] = mapped_column(sa.String(200))
    #: the deployments left on the way (``x-alize-fallback``), if any
    fallback: Mapped[str | None] = mapped_column(sa.String(400))
    #: upstream calls retried on the way
    retries: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")


class BudgetPeriod(Base):
    """Spend and outstanding reservations of one project in one calendar month (UTC).

    Admission is one conditional UPDATE on this row, which both SQLite (database write lock)
    and PostgreSQL (row lock, predicate re-checked after the wait) apply atomically.
    """

    __tablename__ = "budget_periods"

    project_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    period: Mapped[str] = mapped_column(sa.String(7), primary_key=True)  # "YYYY-MM"
    spent_micros: Mapped[int] = mapped_column(sa.BigInteger)
    reserved_micros: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BudgetReservation(Base):
    """One hold on a budget; its ``state`` makes settle/release happen at most once."""

    __tablename__ = "budget_reservations"
    __table_args__ = (sa.Index("ix_budget_reservations_state_created_at", "state", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String(40))
    period: Mapped[str] = mapped_column(sa.String(7))
    amount_micros: Mapped[int] = mapped_column(sa.BigInteger)
    #: ``held``, ``settled`` or ``released``
    state: Mapped[str] = mapped_column(sa.String(16))
    #: the gateway instance holding it (``gateway_instances.id``); empty for older holds
    owner: Mapped[str | None] = mapped_column(sa.String(40))
    actual_micros: Mapped[int | None] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class GatewayInstance(Base):
    """A serving process, alive while its heartbeat is recent: the holds it owns are its own;
    those of an instance that stopped beating (or whose process is gone) are released."""

    __tablename__ = "gateway_instances"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """One link of the hash-chained audit log. ``seq`` is assigned by the appender (not
    autoincrement), so the primary key itself forbids two entries claiming the same place."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(100))
    target: Mapped[str] = mapped_column(sa.String(400))
    details: Mapped[JSONValue] = mapped_column(sa.JSON)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))


class CatalogModel(Base):
    """A model card, stored as opaque JSON owned by ``alize.catalog``."""

    __tablename__ = "catalog_models"

    id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    card: Mapped[JSONValue] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeploymentRow(Base):
    """A deployment's configuration, stored as opaque JSON owned by ``alize.deployments``."""

    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    model_id: Mapped[str] = mapped_column(sa.String(200))
    config: Mapped[JSONValue] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
