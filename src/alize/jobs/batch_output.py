"""What a batch leaves behind: one output line per finished request, then the output and error files.

A finished line is a row of ``batch_lines`` holding its output line exactly as it goes into the
file (OpenAI's ``{id, custom_id, response: {status_code, request_id, body}, error}``), written
once (the row's key refuses a second). Finalizing writes the successful lines to the output
file and the others to the error file, both in input order, staged durably under new ids and
committed in the same transaction that moves the batch to its final state. A finalizer that
loses the race (another worker finalized first) discards what it staged; one killed midway
leaves at most staged bytes with no row, which the file sweeper removes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alize.domain import Usage
from alize.jobs.files import FileService, StagedFile
from alize.store.database import Database
from alize.store.ids import utc_now
from alize.store.repositories import BatchRepository

_PAGE = 1000
#: the states a batch can be finalized from
_OPEN = ("validating", "in_progress", "finalizing", "cancelling")


@dataclass(frozen=True, slots=True)
class LineResult:
    """What running one line gave: the HTTP status it would have had, and its body."""

    status_code: int
    request_id: str
    #: the reply (2xx) or ``{"error": {...}}`` (otherwise)
    body: dict[str, Any] | None
    usage: Usage
    #: the error code of a failed line (``insufficient_quota`` stops the batch)
    error_code: str | None = None


def output_line(custom_id: str, index: int, batch_id: str, result: LineResult) -> str:
    return json.dumps(
        {
            "id": f"batch_req_{batch_id.removeprefix('batch_')}_{index}",
            "custom_id": custom_id,
            "response": {
                "status_code": result.status_code,
                "request_id": result.request_id,
                "body": result.body,
            },
            "error": None,
        },
        separators=(",", ":"),
    )


def unrun_line(custom_id: str, index: int, batch_id: str, code: str, message: str) -> str:
    """A line that never ran (the batch expired, or its budget was spent before it)."""
    return json.dumps(
        {
            "id": f"batch_req_{batch_id.removeprefix('batch_')}_{index}",
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        },
        separators=(",", ":"),
    )


async def record_line(
    db: Database,
    batch_id: str,
    index: int,
    output: str,
    *,
    request_id: str,
    status_code: int,
    usage: Usage,
    clock: Callable[[], datetime] = utc_now,
) -> bool:
    """Store a finished line once; ``True`` if it was new."""
    async with db.transaction() as session:
        return await BatchRepository(session).add_line(
            {
                "batch_id": batch_id,
                "line": index,
                "request_id": request_id,
                "status_code": status_code,
                "output": output,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_tokens": usage.cached_tokens,
                "created_at": clock(),
            },
            200 <= status_code < 300,
        )


async def _pages(db: Database, batch_id: str, ok: bool) -> AsyncIterator[list[str]]:
    after = -1
    while True:
        async with db.transaction() as session:
            rows = await BatchRepository(session).outputs(batch_id, ok=ok, after_line=after, limit=_PAGE)
        if not rows:
            return
        yield [output for _, output in rows]
        after = rows[-1][0]


async def finalize(
    db: Database,
    files: FileService,
    batch_id: str,
    status: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> bool:
    """Write the output and error files and move the batch to ``status``; ``False`` if it was
    already final (then nothing is left behind)."""
    async with db.transaction() as session:
        row = await BatchRepository(session).get(batch_id)
        if row is None or row.status not in _OPEN:
            return False
        project_id, completed, failed = row.project_id, row.completed, row.failed
        expires_after = row.output_expires_after_s
        known_errors = list(row.errors or [])
    staged: list[tuple[str, StagedFile]] = []
    try:
        for field, ok, count, sample in (
            ("output_file_id", True, completed, "batch_result"),
            ("error_file_id", False, failed, "batch_error"),
        ):
            if count:
                name = f"{batch_id}_{'output' if ok else 'error'}.jsonl"
                staged.append(
                    (
                        field,
                        await files.stage(
                            project_id,
                            _pages(db, batch_id, ok),
                            filename=name,
                            purpose="batch_output",
                            sample_type=sample,
                            expires_after_s=expires_after,
                        ),
                    )
                )
        now = clock()
        values: dict[str, Any] = {"status": status, f"{status}_at": now}
        if errors:
            values["errors"] = known_errors + errors
        async with db.transaction() as session:
            repo = BatchRepository(session)
            for field, file in staged:
                values[field] = (await files.commit(session, file)).id
            if not await repo.transition(batch_id, _OPEN, values):
                raise _Lost
    except _Lost:
        for _, file in staged:
            await files.discard(file)
        return False
    except BaseException:
        for _, file in staged:
            await files.discard(file)
        raise
    return True


class _Lost(Exception):
    """Another finalizer got there first (its transaction is rolled back with this one's)."""
