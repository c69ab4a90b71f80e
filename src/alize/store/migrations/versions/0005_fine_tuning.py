"""Fine-tuning jobs (OpenAI's and Mistral's shapes) and their events and checkpoints.

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, length: int, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.String(length), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "fine_tuning_jobs",
        _str("id", 40),
        _str("project_id", 40),
        _str("key_id", 40, nullable=True),
        _str("api", 16),
        _str("model", 256),
        sa.Column("training_files", sa.JSON(), nullable=False),
        _str("validation_file", 40, nullable=True),
        _str("suffix", 64),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("auto_start", sa.Boolean(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        _str("status", 24),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        _str("job_id", 40, nullable=True),
        _str("fine_tuned_model", 256, nullable=True),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        _ts("estimated_finish", nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_fine_tuning_jobs_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_fine_tuning_jobs"),
    )
    op.create_index(
        "ix_fine_tuning_jobs_project_id_created_at", "fine_tuning_jobs", ["project_id", "created_at"]
    )
    op.create_table(
        "fine_tuning_events",
        _str("id", 40),
        _str("fine_tuning_job_id", 40),
        sa.Column("seq", sa.Integer(), nullable=False),
        _str("type", 16),
        _str("level", 8),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["fine_tuning_job_id"],
            ["fine_tuning_jobs.id"],
            name="fk_fine_tuning_events_fine_tuning_job_id_fine_tuning_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_fine_tuning_events"),
    )
    op.create_index("ix_fine_tuning_events_job_seq", "fine_tuning_events", ["fine_tuning_job_id", "seq"])


def downgrade() -> None:
    op.drop_table("fine_tuning_events")
    op.drop_table("fine_tuning_jobs")
