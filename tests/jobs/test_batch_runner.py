"""The ``batch`` job handler on SQLite and PostgreSQL, with a recording line runner: a resumed
job never runs a finished line again, the deadline marks unrun lines, a cancel keeps finished
lines. (The lines' path through the real pipeline is tested in tests/api and tests/e2e.)"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from tests.jobs.conftest import Clock
from tests.support.scripted_engine import ScriptedEngine

from alize.deployments.manager import DeploymentManager, QueueLimits
from alize.deployments.specs import DeploymentSpec
from alize.domain import Usage
from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry
from alize.gateway.auth import Authenticator, Principal
from alize.gateway.keys import KeyHasher
from alize.gateway.projects import ProjectService
from alize.jobs.batch_output import LineResult
from alize.jobs.batch_runner import BatchHandler
from alize.jobs.batches import Batch, BatchService
from alize.jobs.files import FileLimits, FileService
from alize.jobs.jsonl import BatchRequest
from alize.jobs.queue import JobQueue
from alize.jobs.worker import JobContext
from alize.store import Database


class Recorder:
    """Answers every line, counting calls per line; ``crash_at`` raises once on that line."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.calls: dict[int, int] = {}
        self.crash_at = crash_at
        self.on_call: list[object] = []

    async def run(
        self, batch: Batch, request: BatchRequest, principal: Principal | None, request_id: str
    ) -> LineResult:
        self.calls[request.index] = self.calls.get(request.index, 0) + 1
        if request.index == self.crash_at:
            self.crash_at = None
            raise RuntimeError("the worker died here")
        for hook in self.on_call:
            hook(request.index)  # type: ignore[operator]
        body = {"echo": request.body["messages"][0]["content"]}
        return LineResult(200, request_id, body, Usage(prompt_tokens=3, completion_tokens=2))


def _input(n: int) -> io.BytesIO:
    lines = [
        {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": f"line {i}"}]},
        }
        for i in range(n)
    ]
    return io.BytesIO("".join(json.dumps(x) + "\n" for x in lines).encode())


async def _rig(
    db: Database, tmp_path: Path, clock: Clock, lines: Recorder
) -> tuple[BatchService, BatchHandler, JobQueue, FileService, str]:
    project = await ProjectService(db).create("p")
    files = FileService(db, tmp_path / "files", FileLimits(1 << 20, 1000, 4096), clock=clock)
    queue = JobQueue(db, lease_s=30, clock=clock)
    registry = EngineRegistry(load_entry_points=False)
    registry.register("scripted", ScriptedEngine)
    manager = DeploymentManager(registry, QueueLimits(max_waiting=8, timeout_s=5))
    manager.add(
        DeploymentSpec(name="m", model_id="m", engine=EngineConfig(kind="scripted", model_path=Path("echo")))
    )
    handler = BatchHandler(
        db,
        files,
        lines,
        Authenticator(db, KeyHasher(b"k" * 32)),
        manager,
        concurrency=2,
        max_line_bytes=4096,
        clock=clock,
    )
    return BatchService(db, files, queue, clock=clock), handler, queue, files, project.id


async def _claim(queue: JobQueue) -> JobContext:
    job = await queue.claim(["batch"], "w")
    assert job is not None
    return JobContext(job, "w")


async def test_a_resumed_batch_never_runs_a_finished_line_again(
    db: Database, tmp_path: Path, clock: Clock
) -> None:
    lines = Recorder(crash_at=5)
    batches, handler, queue, files, project = await _rig(db, tmp_path, clock, lines)
    upload = await files.upload(project, _input(12), filename="in.jsonl", purpose="batch")
    batch = await batches.create(
        project, None, api="openai", endpoint="/v1/chat/completions", input_file_ids=[upload.id]
    )
    with pytest.raises(RuntimeError):
        await handler.run(await _claim(queue))
    midway = await batches.get(batch.id, project)
    assert midway.status == "in_progress" and 0 < midway.completed < 12
    finished_before = {i for i, n in lines.calls.items() if i != 5}
    # the lease expires (the worker is gone); another worker takes the job over
    clock.advance(60)
    assert await handler.run(await _claim(queue)) == "succeeded"
    done = await batches.get(batch.id, project)
    assert done.status == "completed" and (done.completed, done.failed) == (12, 0)
    assert all(lines.calls[i] == 1 for i in finished_before)
    assert lines.calls[5] == 2 and sorted(lines.calls) == list(range(12))
    assert (done.prompt_tokens, done.completion_tokens) == (36, 24)
    assert done.output_file_id is not None
    _, path = await files.content_path(done.output_file_id, project)
    output = [json.loads(x) for x in path.read_text().splitlines()]
    assert [o["custom_id"] for o in output] == [f"c{i}" for i in range(12)]
    assert output[3]["response"]["body"] == {"echo": "line 3"}


async def test_the_deadline_marks_unrun_lines_expired(db: Database, tmp_path: Path, clock: Clock) -> None:
    lines = Recorder()
    batches, handler, queue, files, project = await _rig(db, tmp_path, clock, lines)
    lines.on_call.append(lambda index: clock.advance(3600 * 30) if index == 2 else None)
    upload = await files.upload(project, _input(10), filename="in.jsonl", purpose="batch")
    batch = await batches.create(
        project, None, api="openai", endpoint="/v1/chat/completions", input_file_ids=[upload.id]
    )
    await handler.run(await _claim(queue))
    over = await batches.get(batch.id, project)
    assert over.status == "expired" and over.expired_at is not None
    assert over.completed + over.failed == 10 and over.completed <= 4
    assert over.error_file_id is not None
    _, path = await files.content_path(over.error_file_id, project)
    codes = {json.loads(x)["error"]["code"] for x in path.read_text().splitlines()}
    assert codes == {"batch_expired"}


async def test_cancel_of_a_queued_batch_finalizes_at_once(db: Database, tmp_path: Path, clock: Clock) -> None:
    batches, _, queue, files, project = await _rig(db, tmp_path, clock, Recorder())
    upload = await files.upload(project, _input(3), filename="in.jsonl", purpose="batch")
    batch = await batches.create(
        project, None, api="openai", endpoint="/v1/chat/completions", input_file_ids=[upload.id]
    )
    cancelled = await batches.cancel(batch.id, project)
    assert cancelled.status == "cancelled" and cancelled.cancelling_at and cancelled.cancelled_at
    assert await queue.claim(["batch"], "w") is None
