"""The queue's ``fine_tune`` handler: validate, train in a child process, publish, meter.

One claim of the job runs :meth:`FineTuneHandler.run`:

1. *validating_files*: the files are read again (they may have been deleted since the job was
   created) and written into the job's work folder as one training file, each file's examples
   repeated by its Mistral ``weight`` (relative to the lightest file, rounded, at most 10x).
   A Mistral job without ``auto_start`` stops here as ``validated`` until ``/start``.
2. *queued → running*: the project's budget is reserved for the estimated tokens, and
   ``python -m alize.jobs.finetune.run`` starts at the lowest CPU priority on the work folder;
   each JSON line it prints becomes an event (metrics with train/valid loss and token accuracy,
   checkpoints, messages) and moves the job's step and ``estimated_finish``. The job is
   ``running`` once the run has tokenized its data (a sequence over the base's context fails
   the job there, naming the line).
3. *succeeded*: the adapter becomes the catalog card ``ft:<base>:<suffix>:<job>`` and a
   deployment of the same name on the base's llama.cpp deployment (published without
   interrupting requests in flight: :meth:`DeploymentManager.publish_adapters`); the trained
   tokens are billed at the base deployment's training price in one usage row (request id: the
   job's id, so a retry cannot bill twice) and the budget hold is settled.

Cancellation: the worker sets ``ctx.cancelled`` at a heartbeat; the run gets SIGTERM and stops
between two steps; the tokens trained so far are billed. A worker that stops hands the job back
(the run is killed; the next claim resumes from the last checkpoint, since the work folder is
the job's); a worker that dies takes the run with it (``--lifeline``) and the job is claimed
again once its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from alize.catalog.cards import FineTuneFacts
from alize.errors import AlizeError
from alize.gateway.budget import BudgetService, Reservation, cost_micros
from alize.gateway.metering import MeteringService, UsageRecord, UsageStatus
from alize.jobs.finetune.card import fine_tuned_card
from alize.jobs.finetune.dataset import parse_chat_jsonl
from alize.jobs.finetune.hyperparams import Hyperparameters
from alize.jobs.finetune.outputs import metrics_csv, weighted_lines
from alize.jobs.finetune.records import FineTuningJob, FineTuningRecords
from alize.jobs.finetune.run import RunSpec, adapter_path
from alize.jobs.finetune.service import KIND, BaseModel, FineTuningService, estimated_tokens
from alize.jobs.queue import FinalState, Job
from alize.jobs.worker import JobContext

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """The run reported an error (bad data, unsupported base): the job fails, no retry."""

    def __init__(self, message: str, code: str, param: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


@dataclass
class _Progress:
    result: dict[str, Any] | None = None
    error: RunFailed | None = None


class FineTuneHandler:
    kind = KIND

    def __init__(
        self,
        service: FineTuningService,
        deployments: Any,  # alize.deployments.service.DeploymentService (create, host_of)
        metering: MeteringService,
        budget: BudgetService,
        *,
        work_root: Path,
        cache_dir: Path | None,
        threads: int,
        max_concurrent: int = 1,
    ) -> None:
        self.service = service
        self.records: FineTuningRecords = service.records
        self.deployments = deployments
        self.metering = metering
        self.budget = budget
        self.work_root = work_root
        self.cache_dir = cache_dir
        self.threads = threads
        self.max_concurrent = max_concurrent

    def workdir(self, job_id: str) -> Path:
        return self.work_root / job_id

    # ------------------------------------------------------------------ the job

    async def run(self, ctx: JobContext) -> FinalState:
        job = await self.records.get(str(ctx.job.payload["fine_tuning_job"]))
        if job.final:
            return "succeeded"
        if job.status == "validating_files":
            try:
                await self._validate(job)
            except AlizeError as exc:
                await self._fail(job, exc.message, code=exc.code or "invalid_training_file", param=exc.param)
                return "succeeded"  # the queue job did its work: the fine-tuning job failed
            if not job.auto_start:
                await self.records.update(job.id, status="validated")
                await self.records.event(
                    job.id, "Files validated; waiting for /start", data={"status": "validated"}
                )
                return "succeeded"
            job = await self.records.update(job.id, status="queued")
            await self.records.event(job.id, "Files validated; job queued", data={"status": "queued"})
        return await self._train(ctx, job)

    async def give_up(self, job: Job, reason: str) -> None:
        ft = await self.records.get(str(job.payload["fine_tuning_job"]))
        if not ft.final:
            await self._fail(
                ft, f"training did not finish after {job.attempts} attempts: {reason}", code="training_failed"
            )

    async def _validate(self, job: FineTuningJob) -> None:
        parts: list[tuple[bytes, float]] = []
        many = job.api == "mistral"
        for index, item in enumerate(job.training_files):
            _, path = await self.service.files.content_path(item["file_id"], job.project_id)
            data = await asyncio.to_thread(path.read_bytes)
            await asyncio.to_thread(
                parse_chat_jsonl, data, what=f"training_files[{index}]" if many else "training_file"
            )
            parts.append((data, float(item.get("weight", 1.0))))
        work = self.workdir(job.id)
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread((work / "train.jsonl").write_bytes, weighted_lines(parts))
        if job.validation_file is not None:
            _, path = await self.service.files.content_path(job.validation_file, job.project_id)
            await asyncio.to_thread(shutil.copyfile, path, work / "valid.jsonl")

    async def _fail(self, job: FineTuningJob, message: str, *, code: str, param: str | None = None) -> None:
        await self.records.update(
            job.id,
            status="failed",
            error={"code": code, "message": message[:2000], "param": param},
            finished_at=self.records.clock(),
        )
        await self.records.event(job.id, f"Job failed: {message}", level="error", data={"status": "failed"})

    async def _train(self, ctx: JobContext, job: FineTuningJob) -> FinalState:
        try:
            base = await self.service.base_of(job.model)
        except AlizeError as exc:
            await self._fail(job, exc.message, code=exc.code or "unsupported_base", param=exc.param)
            return "succeeded"
        work = self.workdir(job.id)
        hyper = Hyperparameters.model_validate(job.hyperparameters)
        train_bytes = (work / "train.jsonl").stat().st_size
        price = self._price(base)
        try:
            hold = await self.budget.reserve(
                job.project_id, cost_micros(estimated_tokens(hyper, train_bytes), 0, price, 0)
            )
        except AlizeError as exc:
            await self._fail(job, exc.message, code=exc.code or "insufficient_quota")
            return "succeeded"
        spec = RunSpec(
            base_gguf=base.gguf,
            training_file=work / "train.jsonl",
            validation_file=work / "valid.jsonl" if (work / "valid.jsonl").is_file() else None,
            hyperparameters=hyper,
            workdir=work,
            cache_dir=self.cache_dir,
            threads=self.threads,
            name=f"ft:{job.model}:{job.suffix}:{job.id}",
        )
        settled = False
        try:
            progress = await self._run_process(ctx, job, spec)
            if progress.error is not None:
                raise progress.error
            if progress.result is None:  # killed (OOM, signal): retried, resumes from its checkpoint
                raise RuntimeError("the training process ended without a result")
            state = await self._finish(job, base, progress.result, hold, price)
            settled = True
            return state
        except RunFailed as exc:
            await self._fail(job, str(exc), code=exc.code, param=exc.param)
            return "succeeded"
        finally:
            if not settled:
                with contextlib.suppress(Exception):
                    await self.budget.release(hold)

    def _price(self, base: BaseModel) -> int:
        host = self.deployments.host_of(base.card.id)
        card = host.spec.card or {}
        return int(card.get("price_training_per_million") or base.card.price_training_per_million)

    # ------------------------------------------------------------------ the child process

    async def _run_process(self, ctx: JobContext, job: FineTuningJob, spec: RunSpec) -> _Progress:
        spec_path = spec.workdir / "spec.json"
        await asyncio.to_thread(spec_path.write_text, json.dumps(spec.to_json()))
        log_file = (spec.workdir / "run.log").open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "alize.jobs.finetune.run",
                str(spec_path),
                "--lifeline",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                preexec_fn=_lowest_priority,
            )
        finally:
            log_file.close()
        watcher = asyncio.create_task(_stop_on_cancel(ctx, proc))
        progress = _Progress()
        started = time.monotonic()
        try:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                await self._on_event(job, event, progress, started)
            await proc.wait()
        except BaseException:  # the worker is stopping or lost the lease: the next claim resumes
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        return progress

    async def _on_event(
        self, job: FineTuningJob, event: dict[str, Any], progress: _Progress, started: float
    ) -> None:
        kind = event.get("type")
        data = event.get("data")
        if kind == "message":
            await self.records.event(job.id, str(event.get("message", "")), data=data)
            if isinstance(data, dict) and "total_steps" in data:
                now = self.records.clock()
                await self.records.update(
                    job.id,
                    status="running",
                    total_steps=int(data["total_steps"]),
                    step=int(data.get("resumed_at") or 0),
                    started_at=job.started_at or now,
                )
                await self.records.event(job.id, "Fine-tuning job started", data={"status": "running"})
        elif kind == "metrics" and isinstance(data, dict):
            message = f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.4f}"
            if data.get("valid_loss") is not None:
                message += f", validation loss={data['valid_loss']:.4f}"
            await self.records.event(job.id, message, type="metrics", data=data)
            finish = self.records.clock() + timedelta(seconds=float(data.get("eta_s") or 0))
            await self.records.update(job.id, step=int(data["step"]), estimated_finish=finish)
        elif kind == "checkpoint" and isinstance(data, dict):
            step = int(event.get("step") or data.get("step") or 0)
            await self.records.event(job.id, f"Checkpoint at step {step}", type="checkpoint", data=data)
        elif kind == "result":
            progress.result = event
        elif kind == "error":
            progress.error = RunFailed(
                str(event.get("message") or "the training process failed"),
                str(event.get("code") or "training_failed"),
                str(event["param"]) if event.get("param") else None,
            )

    # ------------------------------------------------------------------ the end

    async def _finish(
        self, job: FineTuningJob, base: BaseModel, result: dict[str, Any], hold: Reservation, price: int
    ) -> FinalState:
        tokens = int(result.get("trained_tokens") or 0)
        cost = cost_micros(tokens, 0, price, 0)
        cancelled = bool(result.get("cancelled"))
        host = self.deployments.host_of(base.card.id)
        recorded = await self.metering.record(
            UsageRecord(
                request_id=job.id,
                project_id=job.project_id,
                key_id=job.key_id,
                deployment=host.name,
                model=job.model,
                status=UsageStatus.CANCELLED if cancelled else UsageStatus.SUCCESS,
                prompt_tokens=tokens,
                cost_micros=cost,
                latency_ms=int(float(result.get("seconds") or 0) * 1000),
            )
        )
        # a retry after the row was written (publishing failed) must not charge the budget twice
        await self.budget.settle(hold, cost if recorded else 0)
        now = self.records.clock()
        if cancelled:
            await self.records.update(
                job.id, status="cancelled", trained_tokens=tokens, finished_at=now, cancel_requested=False
            )
            await self.records.event(job.id, "Job cancelled", data={"status": "cancelled"})
            return "cancelled"
        model_id = await self._publish(job, base, result, tokens)
        final = result.get("final") or {}
        metrics_file = await metrics_csv(self.records, self.service.files, job)
        await self.records.update(
            job.id,
            status="succeeded",
            fine_tuned_model=model_id,
            trained_tokens=tokens,
            finished_at=now,
            estimated_finish=None,
            result={
                "final": final,
                "seconds": result.get("seconds"),
                "steps": result.get("steps"),
                "result_files": [metrics_file],
            },
        )
        await self.records.event(
            job.id,
            f"New fine-tuned model created: {model_id}",
            data={"status": "succeeded", "model": model_id},
        )
        shutil.rmtree(self.workdir(job.id) / "checkpoints", ignore_errors=True)
        return "succeeded"

    async def _publish(self, job: FineTuningJob, base: BaseModel, result: dict[str, Any], tokens: int) -> str:
        final = result.get("final") or {}
        facts = FineTuneFacts(
            job_id=job.id,
            base=base.card.id,
            training_file=job.training_files[0]["file_id"],
            validation_file=job.validation_file,
            hyperparameters={
                k: v for k, v in job.hyperparameters.items() if isinstance(v, int | float) or v is None
            },
            trained_tokens=tokens,
            train_loss=final.get("train_loss"),
            valid_loss=final.get("valid_loss"),
            valid_mean_token_accuracy=final.get("valid_mean_token_accuracy"),
        )
        merged = "merged" in result
        weights = Path(
            str(result.get("merged") or result.get("adapter") or adapter_path(self.workdir(job.id)))
        )
        card = fine_tuned_card(base.card, suffix=job.suffix, weights=weights, merged=merged, facts=facts)
        if await self.service.catalog.find(card.id) is None:  # a retry after publishing finds it
            await self.service.catalog.add(card)
        if card.id not in {d.name for d in self.deployments.list()}:
            await self.deployments.create({"name": card.id, "model": card.id})
        return card.id


def _lowest_priority() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError):
        os.nice(19)


async def _stop_on_cancel(ctx: JobContext, proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the run once cancellation is requested: it stops between two steps."""
    await ctx.cancelled.wait()
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
