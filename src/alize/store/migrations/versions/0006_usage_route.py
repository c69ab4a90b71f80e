"""How a request was served: the deployment that served it, the fallbacks on the way and the
upstream retries (deployment fallbacks, the remote engine's retries).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("served_by", sa.String(200), nullable=True))
        batch.add_column(sa.Column("fallback", sa.String(400), nullable=True))
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("retries")
        batch.drop_column("fallback")
        batch.drop_column("served_by")
