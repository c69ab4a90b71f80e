"""The ``batch`` job: validate the input, run every line through the policy pipeline, finalize.

Each line runs through a :class:`LineRunner` (built by the API layer: it parses the body as the
endpoint would, calls the same :class:`~alize.gateway.pipeline.PolicyPipeline` as an interactive
request, with a :class:`~alize.gateway.pipeline.BatchLine`, and encodes the reply). So a line
meets the key's rate limits and allow-list, the deployment's content filters and the project's
budget, waits in the deployment's batch lane and pays its batch price.

Idempotency per line. A line's request id is ``<batch id>-<line>``, the same on every attempt.
A finished line is a row of ``batch_lines``; a resumed job (its worker died, another took the
lease over) skips those rows' lines, so no finished line runs twice. The ledger's unique
request id and the pipeline's "bill only a new row" rule cover the one remaining window (the
usage row written, the worker killed before the line's row): that line runs again, unbilled.

Stopping early: a cancel (seen at the next heartbeat) stops starting lines, waits for those in
flight and finalizes ``cancelled``; the deadline (``expires_at``) does the same and marks the
lines that never ran ``batch_expired``; a line refused with ``insufficient_quota`` stops the
batch and marks every line not yet run with that error, so spend exceeds the budget by at most
the lines in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Protocol

from alize.deployments.manager import DeploymentManager
from alize.domain import Usage
from alize.errors import AlizeError
from alize.gateway.auth import Authenticator, Principal
from alize.jobs.batch_output import LineResult, finalize, output_line, record_line, unrun_line
from alize.jobs.batches import Batch, batch_of
from alize.jobs.files import FileService
from alize.jobs.jsonl import MAX_REPORTED, BatchRequest, LineProblem, read_batch_requests
from alize.jobs.queue import FinalState, Job
from alize.jobs.worker import JobContext
from alize.store.database import Database
from alize.store.ids import utc_now
from alize.store.repositories import BatchRepository

log = logging.getLogger(__name__)

#: endpoints whose lines name no model (the classifier serves them)
_NO_MODEL = ("/v1/moderations", "/v1/chat/moderations")


class LineRunner(Protocol):
    async def run(
        self, batch: Batch, request: BatchRequest, principal: Principal | None, request_id: str
    ) -> LineResult: ...


def line_request_id(batch_id: str, index: int) -> str:
    return f"{batch_id}-{index}"


class BatchHandler:
    kind = "batch"

    def __init__(
        self,
        db: Database,
        files: FileService,
        lines: LineRunner,
        auth: Authenticator,
        deployments: DeploymentManager,
        *,
        concurrency: int,
        max_line_bytes: int,
        max_concurrent: int = 2,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._db = db
        self._files = files
        self._lines = lines
        self._auth = auth
        self._deployments = deployments
        self.concurrency = concurrency
        self._max_line_bytes = max_line_bytes
        self._max_concurrent = max_concurrent
        self._clock = clock

    @property
    def max_concurrent(self) -> int:
        return self._max_concurrent

    async def _load(self, batch_id: str) -> Batch | None:
        async with self._db.transaction() as session:
            row = await BatchRepository(session).get(batch_id)
            return batch_of(row) if row is not None else None

    async def _move(self, batch_id: str, from_states: tuple[str, ...], values: dict[str, Any]) -> bool:
        async with self._db.transaction() as session:
            return await BatchRepository(session).transition(batch_id, from_states, values)

    def _requests(self, batch: Batch) -> Iterator[BatchRequest | LineProblem]:
        """Every line of the batch's input files, numbered across files (0-based ``index``)."""
        offset = 0
        for file_id in batch.input_file_ids:
            last = 0
            for item in read_batch_requests(str(self._files.path(file_id)), self._max_line_bytes):
                if isinstance(item, BatchRequest):
                    last = item.index + 1
                    yield BatchRequest(offset + item.index, item.line, item.custom_id, item.url, item.body)
                else:
                    yield item
            offset += last

    def _validate(self, batch: Batch) -> tuple[list[BatchRequest], list[dict[str, Any]]]:
        """The requests, or line-numbered errors: a body for another endpoint, a repeated
        ``custom_id``, an unknown model, a file that is no longer readable."""
        requests: list[BatchRequest] = []
        errors: list[dict[str, Any]] = []
        seen: dict[str, int] = {}

        def problem(line: int | None, code: str, message: str) -> None:
            if len(errors) < MAX_REPORTED:
                errors.append({"code": code, "message": message, "param": None, "line": line})

        try:
            for item in self._requests(batch):
                if isinstance(item, LineProblem):
                    problem(item.line, "invalid_request", item.message)
                    continue
                if item.url is not None and item.url != batch.endpoint:
                    problem(
                        item.line,
                        "mismatched_endpoint",
                        f"url '{item.url}' is not the batch's endpoint '{batch.endpoint}'",
                    )
                first = seen.setdefault(item.custom_id, item.line)
                if first != item.line:
                    problem(
                        item.line,
                        "duplicate_custom_id",
                        f"custom_id '{item.custom_id[:80]}' is repeated (first on line {first})",
                    )
                model = item.body.get("model", batch.model)
                if batch.endpoint not in _NO_MODEL:
                    if not isinstance(model, str) or not model:
                        problem(item.line, "missing_required_parameter", "the body names no 'model'")
                    elif self._deployments.find(model) is None:
                        problem(item.line, "model_not_found", f"The model '{model[:200]}' does not exist")
                requests.append(item)
        except (OSError, AlizeError) as exc:
            problem(None, "file_unreadable", f"the input file could not be read ({type(exc).__name__})")
        if not requests and not errors:
            problem(None, "empty_file", "the batch has no requests")
        return requests, errors

    async def run(self, ctx: JobContext) -> FinalState:
        batch_id = str(ctx.job.payload.get("batch_id", ""))
        batch = await self._load(batch_id)
        if batch is None:
            return "failed"
        if batch.status not in ("validating", "in_progress", "cancelling", "finalizing"):
            return "succeeded"
        requests, errors = await asyncio.to_thread(self._validate, batch)
        if batch.status == "validating":
            if errors:
                await self._move(
                    batch_id,
                    ("validating",),
                    {"status": "failed", "failed_at": self._clock(), "errors": errors},
                )
                return "failed"
            await self._move(
                batch_id,
                ("validating",),
                {"status": "in_progress", "in_progress_at": self._clock(), "total": len(requests)},
            )
        async with self._db.transaction() as session:
            done = await BatchRepository(session).done_lines(batch_id)
        if done:
            log.info("batch %s: resuming, %d of %d lines already done", batch_id, len(done), len(requests))
        pending = [r for r in requests if r.index not in done]
        try:
            principal = await self._principal(batch)
        except AlizeError as exc:  # the key was revoked or expired: no line may run as it
            return await self._finish(batch, pending, "key", exc)
        outcome = await self._run_lines(ctx, batch, pending, principal)
        return await self._finish(batch, pending, outcome)

    async def _principal(self, batch: Batch) -> Principal | None:
        return await self._auth.principal_for_key(batch.key_id) if batch.key_id else None

    async def _run_lines(
        self, ctx: JobContext, batch: Batch, pending: list[BatchRequest], principal: Principal | None
    ) -> str:
        """Run the lines; returns why it stopped: ``done``, ``cancelled``, ``expired`` or ``budget``."""
        current = await self._load(batch.id)
        if current is None or current.status == "cancelling" or ctx.cancelled.is_set():
            return "cancelled"
        slots = asyncio.Semaphore(self.concurrency)
        stop: list[str] = []
        failures: list[BaseException] = []
        tasks: set[asyncio.Task[None]] = set()

        async def one(request: BatchRequest) -> None:
            try:
                request_id = line_request_id(batch.id, request.index)
                result = await self._lines.run(batch, request, principal, request_id)
                if result.error_code == "insufficient_quota":
                    stop.append("budget")
                    return  # not recorded: it is marked with the budget error with the others
                output = output_line(request.custom_id, request.index, batch.id, result)
                await record_line(
                    self._db,
                    batch.id,
                    request.index,
                    output,
                    request_id=request_id,
                    status_code=result.status_code,
                    usage=result.usage,
                    clock=self._clock,
                )
            except Exception as exc:  # the job fails and is retried; finished lines are kept
                failures.append(exc)
            finally:
                slots.release()

        try:
            for request in pending:
                await slots.acquire()
                if not failures and ctx.cancelled.is_set():
                    stop.append("cancelled")
                elif not failures and self._clock() >= batch.expires_at:
                    stop.append("expired")
                if stop or failures:
                    slots.release()
                    break
                task = asyncio.create_task(one(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            # the handler is cancelled (worker stopping, lease lost): so are its lines in flight
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        if failures:
            raise failures[0]
        if ctx.cancelled.is_set() and not stop:
            stop.append("cancelled")
        return stop[0] if stop else "done"

    async def _finish(
        self, batch: Batch, pending: list[BatchRequest], outcome: str, key_error: AlizeError | None = None
    ) -> FinalState:
        if outcome == "cancelled":
            await finalize(self._db, self._files, batch.id, "cancelled", clock=self._clock)
            return "cancelled"
        errors: list[dict[str, Any]] = []
        if outcome in ("expired", "budget", "key"):
            if outcome == "expired":
                code, message = "batch_expired", "This line was not executed because the batch expired."
            elif outcome == "budget":
                code, message = "insufficient_quota", "The project's budget was spent before this line ran."
            else:
                code = key_error.code if key_error is not None and key_error.code else "invalid_api_key"
                message = key_error.message if key_error is not None else "the key is no longer valid"
            errors.append({"code": code, "message": message, "param": None, "line": None})
            await self._mark_unrun(batch, pending, code, message)
        status = "expired" if outcome == "expired" else "completed"
        await self._move(batch.id, ("in_progress",), {"status": "finalizing", "finalizing_at": self._clock()})
        current = await self._load(batch.id)
        if current is not None and current.status == "cancelling":
            status = "cancelled"
        await finalize(self._db, self._files, batch.id, status, errors=errors or None, clock=self._clock)
        return "cancelled" if status == "cancelled" else "succeeded"

    async def _mark_unrun(self, batch: Batch, pending: list[BatchRequest], code: str, message: str) -> None:
        async with self._db.transaction() as session:
            done = await BatchRepository(session).done_lines(batch.id)
        for request in pending:
            if request.index in done:
                continue
            await record_line(
                self._db,
                batch.id,
                request.index,
                unrun_line(request.custom_id, request.index, batch.id, code, message),
                request_id=line_request_id(batch.id, request.index),
                status_code=0,
                usage=Usage(),
                clock=self._clock,
            )

    async def give_up(self, job: Job, reason: str) -> None:
        batch_id = str(job.payload.get("batch_id", ""))
        errors = [{"code": "worker_failed", "message": reason[:500], "param": None, "line": None}]
        await self._move(
            batch_id, ("validating",), {"status": "failed", "failed_at": self._clock(), "errors": errors}
        )
        await finalize(self._db, self._files, batch_id, "failed", errors=errors, clock=self._clock)
