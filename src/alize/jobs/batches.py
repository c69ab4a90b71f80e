"""Batches: create, look up, list and cancel; the work itself is :mod:`alize.jobs.batch_runner`.

Lifecycle (OpenAI's names; Mistral's are mapped by the API layer)::

    validating ──▶ in_progress ──▶ finalizing ──▶ completed
        │               │  └──(deadline)──▶ finalizing ──▶ expired
        └──▶ failed     └──cancel──▶ cancelling ──▶ cancelled

A batch is a row (its state, counters and timestamps) plus one ``batch`` job in the durable queue,
added in the same transaction, so a batch never exists without the job that runs it. Inline
requests (Mistral's ``requests``) are written to an input file of their own first, checked line
by line exactly like an upload, so the runner reads every batch the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from alize.errors import ConflictError, InvalidRequestError, NotFoundError
from alize.jobs.batch_output import finalize
from alize.jobs.files import FileService, check_expiry
from alize.jobs.jsonl import BATCH_ENDPOINTS, batch_request
from alize.jobs.queue import JobQueue
from alize.store.database import Database
from alize.store.ids import new_id, utc_now
from alize.store.jobs_models import BatchRow
from alize.store.repositories import BatchRepository, FileRepository

JOB_KIND = "batch"
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
FINAL = ("completed", "failed", "expired", "cancelled")
STATUSES = ACTIVE + FINAL
#: the longest a batch may run (OpenAI accepts only ``24h``; Mistral's ``timeout_hours`` up to 7 days)
MAX_WINDOW_S = 7 * 24 * 3600
MAX_INLINE = 10_000
MAX_METADATA_KEYS = 16


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch as services and the API see it (the row's fields, detached from the session)."""

    id: str
    project_id: str
    key_id: str | None
    api: str
    endpoint: str
    model: str | None
    input_file_ids: tuple[str, ...]
    inline: bool
    completion_window: str
    metadata: dict[str, Any] | None
    status: str
    job_id: str
    total: int
    completed: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    output_file_id: str | None
    error_file_id: str | None
    errors: tuple[dict[str, Any], ...]
    created_at: datetime
    expires_at: datetime
    in_progress_at: datetime | None
    finalizing_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    expired_at: datetime | None
    cancelling_at: datetime | None
    cancelled_at: datetime | None


def batch_of(row: BatchRow) -> Batch:
    return Batch(
        id=row.id,
        project_id=row.project_id,
        key_id=row.key_id,
        api=row.api,
        endpoint=row.endpoint,
        model=row.model,
        input_file_ids=tuple(row.input_file_ids or ()),
        inline=row.inline,
        completion_window=row.completion_window,
        metadata=row.metadata_,
        status=row.status,
        job_id=row.job_id,
        total=row.total,
        completed=row.completed,
        failed=row.failed,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_tokens=row.cached_tokens,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        errors=tuple(row.errors or ()),
        created_at=row.created_at,
        expires_at=row.expires_at,
        in_progress_at=row.in_progress_at,
        finalizing_at=row.finalizing_at,
        completed_at=row.completed_at,
        failed_at=row.failed_at,
        expired_at=row.expired_at,
        cancelling_at=row.cancelling_at,
        cancelled_at=row.cancelled_at,
    )


def window_seconds(window: str) -> int:
    """``24h``-style windows (``h`` hours or ``d`` days), between one hour and a week."""
    try:
        number, unit = int(window[:-1]), window[-1]
        seconds = number * {"h": 3600, "d": 86_400}[unit]
    except (ValueError, KeyError, IndexError):
        raise InvalidRequestError(
            "completion_window must look like '24h'", param="completion_window"
        ) from None
    if not 3600 <= seconds <= MAX_WINDOW_S:
        raise InvalidRequestError("completion_window must be between 1h and 168h", param="completion_window")
    return seconds


def _check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_KEYS or any(
        len(str(k)) > 64 or len(json.dumps(v)) > 512 for k, v in metadata.items()
    ):
        raise InvalidRequestError(
            f"metadata holds at most {MAX_METADATA_KEYS} keys of 64 characters, values of 512",
            param="metadata",
        )


class BatchService:
    def __init__(
        self,
        db: Database,
        files: FileService,
        queue: JobQueue,
        *,
        output_expires_after_s: int = 0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._db = db
        self._files = files
        self._queue = queue
        self._output_expires_after_s = output_expires_after_s
        self._clock = clock

    async def create(
        self,
        project_id: str,
        key_id: str | None,
        *,
        api: str,
        endpoint: str,
        input_file_ids: Sequence[str] = (),
        inline_requests: Sequence[Any] | None = None,
        completion_window: str = "24h",
        metadata: dict[str, Any] | None = None,
        model: str | None = None,
        output_expires_after_s: int | None = None,
    ) -> Batch:
        """Queue a batch over uploaded files (``input_file_ids``) or inline requests; its output
        files expire ``output_expires_after_s`` after it ends (default: the server's setting)."""
        if endpoint not in BATCH_ENDPOINTS:
            raise InvalidRequestError(
                f"endpoint must be one of {', '.join(BATCH_ENDPOINTS)}", param="endpoint"
            )
        window_s = window_seconds(completion_window)
        _check_metadata(metadata)
        check_expiry(output_expires_after_s)
        if bool(input_file_ids) == (inline_requests is not None):
            raise InvalidRequestError("give either input files or inline requests", param="input_files")
        staged = None
        if inline_requests is not None:
            staged = await self._stage_inline(project_id, inline_requests)
            file_ids: list[str] = [staged.row.id]
            total = staged.row.num_lines
        else:
            file_ids, total = list(dict.fromkeys(input_file_ids)), 0
        now = self._clock()
        batch_id = new_id("batch")
        try:
            async with self._db.transaction() as session:
                if staged is not None:
                    await self._files.commit(session, staged)
                else:
                    for file_id in file_ids:
                        found = await FileRepository(session).get(file_id, project_id)
                        if found is None:
                            raise InvalidRequestError(
                                f"No such file: '{file_id[:64]}'",
                                param="input_file_id",
                                code="file_not_found",
                            )
                        if found.purpose != "batch":
                            raise InvalidRequestError(
                                f"file '{file_id}' has purpose '{found.purpose}', not 'batch'",
                                param="input_file_id",
                            )
                        total += found.num_lines
                job = self._queue.add(session, JOB_KIND, {"batch_id": batch_id}, project_id=project_id)
                row = BatchRow(
                    id=batch_id,
                    project_id=project_id,
                    key_id=key_id,
                    api=api,
                    endpoint=endpoint,
                    model=model,
                    input_file_ids=file_ids,
                    inline=staged is not None,
                    completion_window=completion_window,
                    metadata_=metadata,
                    status="validating",
                    job_id=job.id,
                    total=total,
                    completed=0,
                    failed=0,
                    prompt_tokens=0,
                    completion_tokens=0,
                    cached_tokens=0,
                    errors=None,
                    output_expires_after_s=output_expires_after_s or self._output_expires_after_s or None,
                    created_at=now,
                    expires_at=now + timedelta(seconds=window_s),
                )
                await BatchRepository(session).add(row)
                created = batch_of(row)
        except BaseException:
            if staged is not None:
                await self._files.discard(staged)
            raise
        self._queue.wake()
        return created

    async def _stage_inline(self, project_id: str, requests: Sequence[Any]) -> Any:
        if not requests:
            raise InvalidRequestError("requests must not be empty", param="requests")
        if len(requests) > MAX_INLINE:
            raise InvalidRequestError(f"at most {MAX_INLINE} inline requests", param="requests")
        seen: dict[str, int] = {}
        lines: list[str] = []
        for index, value in enumerate(requests):
            parsed, problem = batch_request(value, index, index + 1)
            if parsed is None:
                raise InvalidRequestError(f"requests[{index}]: {problem}", param="requests")
            first = seen.setdefault(parsed.custom_id, index)
            if first != index:
                raise InvalidRequestError(
                    f"requests[{index}]: custom_id '{parsed.custom_id[:80]}' is repeated (first at {first})",
                    param="requests",
                )
            lines.append(json.dumps({"custom_id": parsed.custom_id, "body": parsed.body}))

        async def pages() -> AsyncIterator[list[str]]:
            yield lines

        return await self._files.stage(
            project_id,
            pages(),
            filename="inline_requests.jsonl",
            purpose="batch",
            sample_type="batch_request",
            source="inline",
        )

    async def get(self, batch_id: str, project_id: str) -> Batch:
        async with self._db.transaction() as session:
            row = await BatchRepository(session).get(batch_id, project_id)
            if row is None:
                raise NotFoundError(f"No such batch: '{batch_id[:64]}'", param="batch_id")
            return batch_of(row)

    async def list(
        self,
        project_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        offset: int = 0,
        statuses: Sequence[str] | None = None,
        created_after: datetime | None = None,
        model: str | None = None,
    ) -> tuple[list[Batch], int]:
        """Newest first, a page at a time, and how many match in all."""
        async with self._db.transaction() as session:
            repo = BatchRepository(session)
            rows = await repo.list(
                project_id,
                after=after,
                limit=limit,
                offset=offset,
                statuses=statuses,
                created_after=created_after,
                model=model,
            )
            total = await repo.count(project_id, statuses, created_after, model)
            return [batch_of(r) for r in rows], total

    async def cancel(self, batch_id: str, project_id: str) -> Batch:
        """Ask for cancellation: the running job stops starting lines and finalizes with what is
        done (kept and billed); a job nobody holds is finalized here and now."""
        now = self._clock()
        async with self._db.transaction() as session:
            repo = BatchRepository(session)
            row = await repo.get(batch_id, project_id)
            if row is None:
                raise NotFoundError(f"No such batch: '{batch_id[:64]}'", param="batch_id")
            if row.status in ("cancelling", "cancelled"):
                return batch_of(row)
            if row.status in FINAL:
                raise ConflictError(f"the batch is already {row.status}", code="batch_over")
            await repo.transition(batch_id, ACTIVE, {"status": "cancelling", "cancelling_at": now})
            outcome = await self._queue.cancel(session, row.job_id)
        if outcome != "requested":  # no worker holds it: nobody else will finish it
            await finalize(self._db, self._files, batch_id, "cancelled", clock=self._clock)
        return await self.get(batch_id, project_id)

    async def check_deletable(self, file_id: str, project_id: str) -> None:
        """404 for a file the project cannot see; 409 while a batch not yet over reads it."""
        await self._files.get(file_id, project_id)
        async with self._db.transaction() as session:
            user = await BatchRepository(session).using_file(file_id, ACTIVE)
        if user is not None:
            raise ConflictError(f"the batch '{user}' is still reading this file", code="file_in_use")

    async def inline_outputs(self, batch: Batch) -> Sequence[dict[str, Any]] | None:
        """The result lines of a finished inline batch (Mistral shows them on the job), in input
        order; ``None`` for a file-based or unfinished batch."""
        if not batch.inline or batch.status not in FINAL:
            return None
        async with self._db.transaction() as session:
            repo = BatchRepository(session)
            good = await repo.outputs(batch.id, ok=True, limit=MAX_INLINE)
            bad = await repo.outputs(batch.id, ok=False, limit=MAX_INLINE)
        return [json.loads(output) for _, output in sorted([*good, *bad])]
