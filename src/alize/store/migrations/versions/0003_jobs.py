"""Job system: files, the durable job queue, batches and their finished lines.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, length: int, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _int(name: str, big: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.BigInteger() if big else sa.Integer(), nullable=False)


def _project_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["project_id"], ["projects.id"], name=f"fk_{table}_project_id_projects", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "files",
        _str("id", 40),
        _str("project_id", 40),
        _str("filename", 255),
        _str("purpose", 32),
        _int("bytes", big=True),
        _int("num_lines"),
        _str("sample_type", 32, nullable=True),
        _str("source", 16),
        _ts("created_at"),
        _ts("expires_at", nullable=True),
        _project_fk("files"),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
    )
    op.create_index("ix_files_project_id_created_at", "files", ["project_id", "created_at"])
    op.create_index("ix_files_expires_at", "files", ["expires_at"])
    op.create_table(
        "jobs",
        _str("id", 40),
        _str("kind", 40),
        _str("project_id", 40, nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        _str("state", 16),
        _int("attempts"),
        _int("max_attempts"),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        _str("lease_owner", 200, nullable=True),
        _ts("lease_expires_at", nullable=True),
        _ts("not_before"),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_state_not_before", "jobs", ["state", "not_before"])
    op.create_index("ix_jobs_state_lease_expires_at", "jobs", ["state", "lease_expires_at"])
    op.create_table(
        "batches",
        _str("id", 40),
        _str("project_id", 40),
        _str("key_id", 40, nullable=True),
        _str("api", 16),
        _str("endpoint", 64),
        _str("model", 256, nullable=True),
        sa.Column("input_file_ids", sa.JSON(), nullable=False),
        sa.Column("inline", sa.Boolean(), nullable=False),
        _str("completion_window", 16),
        sa.Column("metadata", sa.JSON(), nullable=True),
        _str("status", 16),
        _str("job_id", 40),
        _int("total"),
        _int("completed"),
        _int("failed"),
        _int("prompt_tokens", big=True),
        _int("completion_tokens", big=True),
        _int("cached_tokens", big=True),
        _str("output_file_id", 40, nullable=True),
        _str("error_file_id", 40, nullable=True),
        sa.Column("errors", sa.JSON(), nullable=True),
        sa.Column("output_expires_after_s", sa.Integer(), nullable=True),
        _ts("created_at"),
        _ts("expires_at"),
        *(
            _ts(name, nullable=True)
            for name in (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        ),
        _project_fk("batches"),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
    )
    op.create_index("ix_batches_project_id_created_at", "batches", ["project_id", "created_at"])
    op.create_table(
        "batch_lines",
        _str("batch_id", 40),
        _int("line"),
        _str("request_id", 100),
        _int("status_code"),
        sa.Column("output", sa.Text(), nullable=False),
        _int("prompt_tokens"),
        _int("completion_tokens"),
        _int("cached_tokens"),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name="fk_batch_lines_batch_id_batches", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("batch_id", "line", name="pk_batch_lines"),
    )


def downgrade() -> None:
    op.drop_table("batch_lines")
    op.drop_index("ix_batches_project_id_created_at", table_name="batches")
    op.drop_table("batches")
    op.drop_index("ix_jobs_state_lease_expires_at", table_name="jobs")
    op.drop_index("ix_jobs_state_not_before", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_files_expires_at", table_name="files")
    op.drop_index("ix_files_project_id_created_at", table_name="files")
    op.drop_table("files")
