"""Creating, starting and cancelling fine-tuning jobs (the API's side; the worker's is
:mod:`alize.jobs.finetune.handler`).

Everything a client can get wrong is found here, before anything is queued, and is a 400 (or
404) naming the field or the file and line: an unknown base (404 ``model_not_found``), a base
whose adapters llama.cpp cannot load, no llama.cpp deployment of the base to serve the result
(409), another project's file (404, exactly like a missing one), a file of the wrong purpose, a
line without an assistant turn, a hyperparameter out of range, and a project whose budget
cannot pay for the run's estimated tokens (429 ``insufficient_quota``). Sequences longer than
the base's context need the base's tokenizer, so that check runs on the worker before the first
training step; it fails the job with the same message naming the line.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from alize.catalog.cards import AdapterSource, ModelCard
from alize.catalog.service import CatalogService
from alize.catalog.sources import resolve_path
from alize.errors import InsufficientQuotaError, InvalidRequestError
from alize.gateway.budget import BudgetService, cost_micros
from alize.jobs.files import FileService
from alize.jobs.finetune.base import read_base_facts
from alize.jobs.finetune.card import check_suffix
from alize.jobs.finetune.dataset import parse_chat_jsonl
from alize.jobs.finetune.hyperparams import Hyperparameters, parse_hyperparameters
from alize.jobs.finetune.records import FineTuningJob, FineTuningRecords
from alize.jobs.queue import JobQueue
from alize.store.repositories import FineTuningRepository

#: the queue's job kind (see :mod:`alize.jobs.finetune.handler`)
KIND = "fine_tune"
DEFAULT_SUFFIX = "tuned"
#: bytes per token when sizing a run before its files are tokenized (errs high: ~4 in English)
_BYTES_PER_TOKEN = 3


class HostLookup(Protocol):
    """The deployment service's answer to "which llama.cpp deployment serves this base?"."""

    def host_of(self, base: str) -> object: ...


@dataclass(frozen=True, slots=True)
class TrainingFile:
    file_id: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class NewJob:
    """A create request in either API's shape, hyperparameters already in Alizé's names."""

    api: str
    model: str
    training_files: tuple[TrainingFile, ...]
    validation_file: str | None = None
    suffix: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    auto_start: bool = True
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BaseModel:
    card: ModelCard
    gguf: Path


@dataclass(frozen=True, slots=True)
class Checked:
    """A request that passed every check, with the run's upper-bound estimate."""

    hyperparameters: Hyperparameters
    base: BaseModel
    suffix: str
    #: the training files' tokens, estimated from their size (one pass)
    data_tokens: int
    #: every pass together (what the budget must cover)
    train_tokens: int
    cost_micros: int


def estimated_tokens(hyper: Hyperparameters, training_bytes: int) -> int:
    """An upper bound on the tokens a run trains on, before tokenization (for the budget)."""
    per_epoch = training_bytes // _BYTES_PER_TOKEN + 1
    if hyper.training_steps is not None:
        return min(hyper.training_steps * hyper.batch_size * hyper.seq_len, per_epoch * 100)
    return per_epoch * hyper.n_epochs


class FineTuningService:
    def __init__(
        self,
        records: FineTuningRecords,
        queue: JobQueue,
        files: FileService,
        catalog: CatalogService,
        hosts: HostLookup,
        budget: BudgetService,
    ) -> None:
        self.records = records
        self.queue = queue
        self.files = files
        self.catalog = catalog
        self.hosts = hosts
        self.budget = budget

    async def base_of(self, model_id: str) -> BaseModel:
        """The base's card and GGUF file; 404 / 400 / 409 as the module docstring says."""
        card = await self.catalog.get(model_id)
        if isinstance(card.source, AdapterSource):
            raise InvalidRequestError(
                f"'{model_id}' is itself fine-tuned; fine-tune its base '{card.source.base}' instead",
                param="model",
                code="unsupported_base",
            )
        if "chat" not in card.tasks:
            raise InvalidRequestError(
                f"'{model_id}' is not a chat model", param="model", code="unsupported_base"
            )
        self.hosts.host_of(card.id)  # 409 when nothing could serve the fine-tuned model
        path = await asyncio.to_thread(resolve_path, card.source, cache_dir=self.catalog.cache_dir)
        await asyncio.to_thread(read_base_facts, path)  # 400 for an architecture we cannot adapt
        return BaseModel(card=card, gguf=path)

    async def _check_file(self, file_id: str, project_id: str, param: str) -> int:
        found, path = await self.files.content_path(file_id, project_id)
        if found.purpose != "fine-tune":
            raise InvalidRequestError(
                f"file '{file_id}' has purpose '{found.purpose}'; "
                "upload training data with purpose 'fine-tune'",
                param=param,
                code="invalid_training_file",
            )
        data = await asyncio.to_thread(path.read_bytes)
        await asyncio.to_thread(parse_chat_jsonl, data, what=param)
        return len(data)

    async def check(self, project_id: str, request: NewJob) -> Checked:
        """Every check :meth:`create` makes, and the run's estimate; writes nothing (Mistral's
        ``dry_run`` answers with this)."""
        hyper = parse_hyperparameters(request.hyperparameters)
        try:
            suffix = check_suffix(request.suffix or DEFAULT_SUFFIX)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="suffix") from None
        if not request.training_files:
            raise InvalidRequestError("at least one training file is needed", param="training_files")
        if len(request.training_files) > 16:
            raise InvalidRequestError("at most 16 training files", param="training_files")
        base = await self.base_of(request.model)
        training_bytes = 0
        many = request.api == "mistral"
        for index, item in enumerate(request.training_files):
            if not 0 < item.weight <= 100:
                raise InvalidRequestError(
                    "a training file's weight must be > 0 and <= 100", param=f"training_files[{index}].weight"
                )
            param = f"training_files[{index}]" if many else "training_file"
            training_bytes += await self._check_file(item.file_id, project_id, param)
        if request.validation_file is not None:
            await self._check_file(
                request.validation_file, project_id, "validation_files[0]" if many else "validation_file"
            )
        tokens = estimated_tokens(hyper, training_bytes)
        cost = cost_micros(tokens, 0, base.card.price_training_per_million, 0)
        status = await self.budget.status(project_id)
        if status.remaining_micros is not None and cost > status.remaining_micros:
            raise InsufficientQuotaError(
                f"this run is estimated at {cost} micro-units of training and the project's "
                f"budget has {status.remaining_micros} left this month",
            )
        return Checked(hyper, base, suffix, training_bytes // _BYTES_PER_TOKEN + 1, tokens, cost)

    async def create(self, project_id: str, key_id: str | None, request: NewJob) -> FineTuningJob:
        checked = await self.check(project_id, request)
        hyper, base, suffix = checked.hyperparameters, checked.base, checked.suffix
        row = self.records.new_row(
            project_id=project_id,
            key_id=key_id,
            api=request.api,
            model=base.card.id,
            training_files=[{"file_id": f.file_id, "weight": f.weight} for f in request.training_files],
            validation_file=request.validation_file,
            suffix=suffix,
            hyperparameters=hyper.model_dump(),
            auto_start=request.auto_start,
            metadata_=request.metadata,
            status="validating_files",
        )
        first = self.records.new_event(
            row.id,
            0,
            "Validating training files",
            type="message",
            level="info",
            data={"status": "validating_files"},
        )
        async with self.records.db.transaction() as session:
            repo = FineTuningRepository(session)
            await repo.add(row)
            await repo.add_event(first)  # in the same transaction: a worker cannot log before it
            job = self.queue.add(session, KIND, {"fine_tuning_job": row.id}, project_id=project_id)
            row.job_id = job.id
        self.queue.wake()
        return await self.records.get(row.id)

    async def start(self, job_id: str, project_id: str) -> FineTuningJob:
        """Mistral's ``/start``: a validated job waiting for it is queued for training."""
        job = await self.records.get(job_id, project_id)
        if job.status != "validated":
            raise InvalidRequestError(
                f"only a validated job waiting to start can be started; this one is {job.status}",
                param="job_id",
                code="invalid_state",
            )
        async with self.records.db.transaction() as session:
            repo = FineTuningRepository(session)
            queued = self.queue.add(session, KIND, {"fine_tuning_job": job.id}, project_id=project_id)
            await repo.update(
                job.id, {"status": "queued", "job_id": queued.id, "updated_at": self.records.clock()}
            )
            seq = await repo.next_seq(job.id)
            await repo.add_event(
                self.records.new_event(
                    job.id,
                    seq,
                    "Job queued for training",
                    type="message",
                    level="info",
                    data={"status": "queued"},
                )
            )
        self.queue.wake()
        return await self.records.get(job.id)

    async def cancel(self, job_id: str, project_id: str) -> FineTuningJob:
        """Cancel a job: at once if no worker holds it, else flag it (the worker stops training
        at its next heartbeat, between two steps). A finished job is returned unchanged."""
        job = await self.records.get(job_id, project_id)
        if job.final:
            return job
        now = self.records.clock()
        async with self.records.db.transaction() as session:
            outcome = await self.queue.cancel(session, job.job_id) if job.job_id else "over"
            values: dict[str, Any] = {"updated_at": now}
            if outcome == "requested":
                values["cancel_requested"] = True
            else:  # nobody holds it (queued, or validated and waiting for /start)
                values.update(status="cancelled", finished_at=now)
            await FineTuningRepository(session).update(job.id, values)
        if outcome != "requested":
            await self.records.event(job.id, "Job cancelled", data={"status": "cancelled"})
        return await self.records.get(job.id)
