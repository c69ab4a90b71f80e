"""Creating, starting and cancelling fine-tuning jobs: what a client gets wrong is refused before
anything is queued (another project's file is a 404 like a missing one, a file of the wrong
purpose or an unpayable run is refused), and cancelling a job nobody holds ends it at once."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tests.jobs.conftest import Clock
from tests.jobs.finetune.conftest import TOY, jsonl

from alize.catalog.cards import GGUFFileSource, ModelCard
from alize.catalog.service import CatalogService
from alize.errors import ConflictError, InsufficientQuotaError, InvalidRequestError, NotFoundError
from alize.gateway.budget import BudgetService
from alize.gateway.projects import ProjectService
from alize.jobs.files import FileLimits, FileService
from alize.jobs.finetune.records import FineTuningRecords
from alize.jobs.finetune.service import FineTuningService, NewJob, TrainingFile
from alize.jobs.queue import JobQueue
from alize.store import Database


class Hosts:
    """Which bases have a llama.cpp deployment (the deployment service's answer, as data)."""

    def __init__(self, *bases: str) -> None:
        self.bases = set(bases)

    def host_of(self, base: str) -> object:
        if base not in self.bases:
            raise ConflictError(f"no deployment serves the base model '{base}'", param="model")
        return base


async def _setup(db: Database, tmp_path: Path, clock: Clock, gguf: Path, *, budget: int | None = None):  # type: ignore[no-untyped-def]
    projects = ProjectService(db)
    a = await projects.create("a", monthly_budget_micros=budget)
    b = await projects.create("b")
    catalog = CatalogService(db)
    card = ModelCard(
        id="tiny",
        display_name="tiny",
        publisher="tests",
        license="mit",
        open_weights=True,
        tasks=("chat",),
        context_length=512,
        source=GGUFFileSource(path=str(gguf)),
        has_chat_template=True,
        price_training_per_million=1_000_000,
    )
    await catalog.add(card)
    files = FileService(db, tmp_path / "files", FileLimits(1 << 20, 1000, 1 << 16), clock=clock)
    queue = JobQueue(db, lease_s=30, clock=clock)
    service = FineTuningService(
        FineTuningRecords(db, clock=clock),
        queue,
        files,
        catalog,
        Hosts("tiny"),
        BudgetService(db, clock=clock),
    )
    return service, files, a.id, b.id


async def _file(files: FileService, project: str, data: bytes = b"", purpose: str = "fine-tune") -> str:
    stored = await files.upload(project, io.BytesIO(data or jsonl(TOY)), filename="t.jsonl", purpose=purpose)
    return stored.id


def _openai(file_id: str, **changes: object) -> NewJob:
    values: dict[str, object] = {"api": "openai", "model": "tiny", "training_files": (TrainingFile(file_id),)}
    return NewJob(**{**values, **changes})  # type: ignore[arg-type]


async def test_a_created_job_is_queued_with_its_validated_hyperparameters(
    db: Database, tmp_path: Path, clock: Clock, tiny_gguf: Path
) -> None:
    service, files, project, _ = await _setup(db, tmp_path, clock, tiny_gguf)
    job = await service.create(
        project, None, _openai(await _file(files, project), hyperparameters={"n_epochs": 2})
    )
    assert job.status == "validating_files" and job.suffix == "tuned" and job.hyperparameters["n_epochs"] == 2
    queued = await service.queue.get(job.job_id or "")
    assert queued is not None and queued.kind == "fine_tune" and queued.payload == {"fine_tuning_job": job.id}
    events = await service.records.events(job.id, project)
    assert [e.data for e in events] == [{"status": "validating_files"}]
    listed, total = await service.records.list(project)
    assert [j.id for j in listed] == [job.id] and total == 1


async def test_files_of_another_project_or_purpose_and_bad_fields_are_refused(
    db: Database, tmp_path: Path, clock: Clock, tiny_gguf: Path
) -> None:
    service, files, project, other = await _setup(db, tmp_path, clock, tiny_gguf)
    theirs = await _file(files, other)
    with pytest.raises(NotFoundError):
        await service.create(project, None, _openai(theirs))
    batch_line = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\n'
    batch = await _file(files, project, batch_line, purpose="batch")
    with pytest.raises(InvalidRequestError) as caught:
        await service.create(project, None, _openai(batch))
    assert caught.value.param == "training_file" and "purpose 'batch'" in caught.value.message
    mine = await _file(files, project)
    with pytest.raises(InvalidRequestError) as caught:
        await service.create(project, None, _openai(mine, suffix="no spaces"))
    assert caught.value.param == "suffix"
    with pytest.raises(InvalidRequestError) as caught:
        await service.create(project, None, _openai(mine, hyperparameters={"batch_size": 0}))
    assert caught.value.param == "hyperparameters.batch_size"
    with pytest.raises(InvalidRequestError) as caught:
        await service.create(project, None, _openai(mine, training_files=()))
    assert caught.value.param == "training_files"
    service.hosts = Hosts()
    with pytest.raises(ConflictError):
        await service.create(project, None, _openai(mine))
    assert (await service.records.list(project))[1] == 0  # nothing was created


async def test_a_run_the_budget_cannot_pay_for_is_refused(
    db: Database, tmp_path: Path, clock: Clock, tiny_gguf: Path
) -> None:
    service, files, project, _ = await _setup(db, tmp_path, clock, tiny_gguf, budget=10)
    with pytest.raises(InsufficientQuotaError):
        await service.create(project, None, _openai(await _file(files, project)))


async def test_cancel_and_start_follow_the_state_machine(
    db: Database, tmp_path: Path, clock: Clock, tiny_gguf: Path
) -> None:
    service, files, project, other = await _setup(db, tmp_path, clock, tiny_gguf)
    file_id = await _file(files, project)
    job = await service.create(project, None, _openai(file_id))
    with pytest.raises(NotFoundError):
        await service.cancel(job.id, other)
    cancelled = await service.cancel(job.id, project)  # no worker holds it: over at once
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert (await service.queue.get(job.job_id or "")).state == "cancelled"  # type: ignore[union-attr]
    assert (await service.cancel(job.id, project)).status == "cancelled"  # idempotent
    with pytest.raises(InvalidRequestError) as caught:
        await service.start(job.id, project)
    assert caught.value.code == "invalid_state"
    waiting = await service.create(project, None, _openai(file_id, api="mistral", auto_start=False))
    await service.records.update(waiting.id, status="validated")
    started = await service.start(waiting.id, project)
    assert started.status == "queued" and started.job_id != waiting.job_id
    claimed = await service.queue.claim(["fine_tune"], "w1")
    claimed = (
        claimed
        if claimed is None or claimed.id == started.job_id
        else await service.queue.claim(["fine_tune"], "w1")
    )
    assert claimed is not None
    running = await service.cancel(waiting.id, project)  # a worker holds it: flagged for the worker
    assert running.cancel_requested and not running.final
