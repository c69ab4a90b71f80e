"""Crash-safe budget holds and GDPR pseudonymisation.

* ``gateway_instances``: each serving process registers itself and heartbeats, so the budget
  holds of a process that died (kill -9, power loss) can be told from those of a live one.
* ``budget_reservations.owner``: the instance that holds the reservation.
* ``usage.user_id``: the chat user a ledger row belongs to; replaced by a pseudonym when the
  user is erased, so billing totals stay exact without naming anyone.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_instances",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gateway_instances"),
    )
    with op.batch_alter_table("budget_reservations") as batch:
        batch.add_column(sa.Column("owner", sa.String(40), nullable=True))
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("user_id", sa.String(100), nullable=True))
    op.create_index("ix_usage_user_id", "usage", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_usage_user_id", table_name="usage")
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("user_id")
    with op.batch_alter_table("budget_reservations") as batch:
        batch.drop_column("owner")
    op.drop_table("gateway_instances")
