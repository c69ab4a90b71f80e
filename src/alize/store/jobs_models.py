"""Tables of the job system: uploaded files, the durable job queue, batches and their lines.

The queue (``jobs``) is generic: a job is a kind, a JSON payload and a lease; what a kind means
is up to its handler (``alize.jobs``). Batches keep their own state machine in ``batches`` and
one row per *finished* input line in ``batch_lines``: the primary key ``(batch_id, line)`` is
what makes a resumed batch skip the lines it already ran.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from alize.store.models import Base
from alize.store.types import UTCDateTime


class FileRow(Base):
    """An uploaded or generated file. The bytes live under the data directory, at a path derived
    from ``id`` alone (never from the client's file name)."""

    __tablename__ = "files"
    __table_args__ = (sa.Index("ix_files_project_id_created_at", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(sa.String(255))
    purpose: Mapped[str] = mapped_column(sa.String(32))
    bytes: Mapped[int] = mapped_column(sa.BigInteger)
    num_lines: Mapped[int] = mapped_column(sa.Integer)
    #: Mistral's ``sample_type`` (``batch_request``, ``batch_result``, ``batch_error``, ``instruct``)
    sample_type: Mapped[str | None] = mapped_column(sa.String(32))
    #: ``upload`` or ``batch`` (written by a batch)
    source: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class JobRow(Base):
    """One unit of background work. ``state``: ``queued`` → ``running`` → ``succeeded`` |
    ``failed`` | ``cancelled``; a ``running`` job whose lease expired may be claimed again."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_state_not_before", "state", "not_before"),
        sa.Index("ix_jobs_state_lease_expires_at", "state", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(40))
    project_id: Mapped[str | None] = mapped_column(sa.String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    state: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer)
    max_attempts: Mapped[int] = mapped_column(sa.Integer)
    cancel_requested: Mapped[bool] = mapped_column(sa.Boolean)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: not claimed before this moment (retry back-off)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BatchRow(Base):
    """A batch: its input, its state and timestamps, live counters and the files it wrote."""

    __tablename__ = "batches"
    __table_args__ = (sa.Index("ix_batches_project_id_created_at", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("projects.id", ondelete="CASCADE"))
    #: the key that created it: its limits and deployment allow-list apply to every line
    key_id: Mapped[str | None] = mapped_column(sa.String(40))
    #: ``openai`` or ``mistral``: the shape it was created in
    api: Mapped[str] = mapped_column(sa.String(16))
    endpoint: Mapped[str] = mapped_column(sa.String(64))
    #: Mistral's job-level model (lines without a ``model`` use it)
    model: Mapped[str | None] = mapped_column(sa.String(256))
    input_file_ids: Mapped[list[str]] = mapped_column(sa.JSON)
    #: whether the input came inline (Mistral ``requests``): results are then shown inline too
    inline: Mapped[bool] = mapped_column(sa.Boolean)
    completion_window: Mapped[str] = mapped_column(sa.String(16))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(16))
    job_id: Mapped[str] = mapped_column(sa.String(40))
    total: Mapped[int] = mapped_column(sa.Integer)
    completed: Mapped[int] = mapped_column(sa.Integer)
    failed: Mapped[int] = mapped_column(sa.Integer)
    prompt_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    completion_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    cached_tokens: Mapped[int] = mapped_column(sa.BigInteger)
    output_file_id: Mapped[str | None] = mapped_column(sa.String(40))
    error_file_id: Mapped[str | None] = mapped_column(sa.String(40))
    #: batch-level errors ``[{code, message, param, line}]``
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON)
    output_expires_after_s: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    in_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finalizing_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelling_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BatchLineRow(Base):
    """The result of one finished input line, written once (the key refuses a second)."""

    __tablename__ = "batch_lines"

    batch_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    #: 0-based position of the request in the batch's input
    line: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    request_id: Mapped[str] = mapped_column(sa.String(100))
    #: HTTP status the line would have had as an interactive request (0: never ran)
    status_code: Mapped[int] = mapped_column(sa.Integer)
    #: the finished output line, JSON text, exactly as it goes into the output or error file
    output: Mapped[str] = mapped_column(sa.Text)
    prompt_tokens: Mapped[int] = mapped_column(sa.Integer)
    completion_tokens: Mapped[int] = mapped_column(sa.Integer)
    cached_tokens: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FineTuningJobRow(Base):
    """A fine-tuning job as clients see it (OpenAI's or Mistral's shape, ``api`` says which);
    the queue job ``job_id`` is the work. ``status``: ``validating_files`` → (``validated``,
    Mistral without ``auto_start``) → ``queued`` → ``running`` → ``succeeded`` | ``failed`` |
    ``cancelled``."""

    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (sa.Index("ix_fine_tuning_jobs_project_id_created_at", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("projects.id", ondelete="CASCADE"))
    key_id: Mapped[str | None] = mapped_column(sa.String(40))
    api: Mapped[str] = mapped_column(sa.String(16))
    model: Mapped[str] = mapped_column(sa.String(256))
    #: ``[{"file_id": ..., "weight": ...}]`` (OpenAI's one file has weight 1)
    training_files: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON)
    validation_file: Mapped[str | None] = mapped_column(sa.String(40))
    suffix: Mapped[str] = mapped_column(sa.String(64))
    #: :class:`alize.jobs.finetune.hyperparams.Hyperparameters` as validated
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    auto_start: Mapped[bool] = mapped_column(sa.Boolean)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(24))
    cancel_requested: Mapped[bool] = mapped_column(sa.Boolean)
    job_id: Mapped[str | None] = mapped_column(sa.String(40))
    fine_tuned_model: Mapped[str | None] = mapped_column(sa.String(256))
    trained_tokens: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: steps done / planned, and the last train loss (what a progress bar shows)
    step: Mapped[int] = mapped_column(sa.Integer)
    total_steps: Mapped[int | None] = mapped_column(sa.Integer)
    #: ``{"code", "message", "param"}`` once failed
    error: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    estimated_finish: Mapped[datetime | None] = mapped_column(UTCDateTime)


class FineTuningEventRow(Base):
    """One event of a job: ``type`` ``message`` or ``metrics`` (what ``/events`` lists), or
    ``checkpoint`` (what ``/checkpoints`` lists; ``data`` holds its step and metrics)."""

    __tablename__ = "fine_tuning_events"
    __table_args__ = (sa.Index("ix_fine_tuning_events_job_seq", "fine_tuning_job_id", "seq"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    fine_tuning_job_id: Mapped[str] = mapped_column(
        sa.String(40), sa.ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE")
    )
    #: order within the job (the service counts; ids are random)
    seq: Mapped[int] = mapped_column(sa.Integer)
    type: Mapped[str] = mapped_column(sa.String(16))
    level: Mapped[str] = mapped_column(sa.String(8))
    message: Mapped[str] = mapped_column(sa.Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
