"""A worker: claims jobs from the queue, runs each with its kind's handler, keeps the lease alive.

The same class runs inside ``alize serve`` (the embedded worker) and as ``alize worker``. What
it guarantees a handler:

* **one owner at a time.** Heartbeats every ``heartbeat_s`` renew the lease; if a heartbeat finds
  the lease gone (the worker stalled past ``lease_s`` and another took the job over), the
  handler's task is cancelled at once, so two workers never run one job side by side for long.
* **cancellation is seen.** A requested cancel reaches the handler through
  :attr:`JobContext.cancelled` at the next heartbeat.
* **a clean hand-over on stop.** Stopping cancels running handlers and *releases* their jobs
  (the attempt is not counted), so another worker resumes them at its next claim rather than
  after the lease expires.
* **retries with a limit.** A handler that raises is retried after ``retry_delay_s``; a job
  claimed more than ``max_attempts`` times (its workers keep dying) is handed to the handler's
  ``give_up`` and failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from alize.jobs.queue import FinalState, Job, JobQueue

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What a running handler sees of its job and its lease."""

    job: Job
    worker_id: str
    #: set when cancellation of the job was requested
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


class JobHandler(Protocol):
    """One job kind. ``run`` returns the job's final state; it may raise to be retried."""

    @property
    def kind(self) -> str: ...

    @property
    def max_concurrent(self) -> int: ...

    async def run(self, ctx: JobContext) -> FinalState: ...

    async def give_up(self, job: Job, reason: str) -> None:
        """The job will not run again (attempts exhausted): record why wherever users look."""


def new_worker_id(role: str) -> str:
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class _LeaseLost(Exception):
    pass


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        handlers: Sequence[JobHandler],
        *,
        worker_id: str | None = None,
        max_jobs: int = 2,
        heartbeat_s: float = 5.0,
        poll_s: float = 1.0,
        retry_delay_s: float = 5.0,
    ) -> None:
        self.queue = queue
        self.handlers = {h.kind: h for h in handlers}
        self.worker_id = worker_id or new_worker_id("worker")
        self.max_jobs = max_jobs
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.retry_delay_s = retry_delay_s
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        queue.listeners.append(self.wake)

    @property
    def running(self) -> list[str]:
        return list(self._running)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self.run(), name=f"job-worker {self.worker_id}")

    async def stop(self) -> None:
        """Stop claiming, cancel running handlers and hand their jobs back to the queue."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        with contextlib.suppress(ValueError):
            self.queue.listeners.remove(self.wake)

    def _claimable_kinds(self) -> list[str]:
        busy: dict[str, int] = {}
        for job, _ in self._running.values():
            busy[job.kind] = busy.get(job.kind, 0) + 1
        return [k for k, h in self.handlers.items() if busy.get(k, 0) < h.max_concurrent]

    async def run(self) -> None:
        """Claim and run jobs until :meth:`stop`."""
        log.info("job worker %s started (kinds: %s)", self.worker_id, ", ".join(self.handlers))
        try:
            while not self._stopping:
                self._wake.clear()
                await self._claim_some()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
        finally:
            await self._hand_back()
            log.info("job worker %s stopped", self.worker_id)

    async def _claim_some(self) -> None:
        while not self._stopping and len(self._running) < self.max_jobs:
            try:
                job = await self.queue.claim(self._claimable_kinds(), self.worker_id)
            except Exception as exc:  # the database is down: try again at the next poll
                log.warning("claiming a job failed: %s", exc)
                return
            if job is None:
                return
            if job.attempts > job.max_attempts:
                await self._give_up(job, f"the job was started {job.max_attempts} times without finishing")
                continue
            task = asyncio.create_task(self._run(job), name=f"job {job.id}")
            self._running[job.id] = (job, task)
            task.add_done_callback(functools.partial(self._done, job.id))

    def _done(self, job_id: str, _task: object = None) -> None:
        self._running.pop(job_id, None)
        self._wake.set()

    async def _give_up(self, job: Job, reason: str) -> None:
        log.error("job %s (%s) failed for good: %s", job.id, job.kind, reason)
        try:
            await self.handlers[job.kind].give_up(job, reason)
        finally:
            await self.queue.finish(job.id, self.worker_id, "failed", reason)

    async def _heartbeats(self, ctx: JobContext) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                flag = await self.queue.heartbeat(ctx.job.id, self.worker_id)
            except Exception as exc:  # transient: the lease survives a few missed beats
                log.warning("heartbeat of job %s failed: %s", ctx.job.id, exc)
                continue
            if flag is None:
                raise _LeaseLost
            if flag:
                ctx.cancelled.set()

    async def _run(self, job: Job) -> None:
        handler = self.handlers[job.kind]
        ctx = JobContext(job, self.worker_id)
        if job.cancel_requested:
            ctx.cancelled.set()
        work = asyncio.create_task(handler.run(ctx))
        beats = asyncio.create_task(self._heartbeats(ctx))
        try:
            await asyncio.wait({work, beats}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the worker is stopping: _hand_back releases the job
            for task in (work, beats):
                task.cancel()
            await asyncio.gather(work, beats, return_exceptions=True)
            raise
        if not work.done():  # the lease was lost: someone else owns the job now
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            log.warning("job %s: lease lost to another worker; stopped here", job.id)
            return
        beats.cancel()
        await asyncio.gather(beats, return_exceptions=True)
        try:
            state = work.result()
        except Exception as exc:
            log.exception("job %s (%s) failed", job.id, job.kind, exc_info=exc)
            reason = f"{type(exc).__name__}: {exc}"
            if job.attempts >= job.max_attempts:
                await self._give_up(job, reason)
            else:
                await self.queue.retry(job.id, self.worker_id, reason, self.retry_delay_s)
            return
        await self.queue.finish(job.id, self.worker_id, state)

    async def _hand_back(self) -> None:
        running = list(self._running.values())
        for _, task in running:
            task.cancel()
        await asyncio.gather(*(task for _, task in running), return_exceptions=True)
        for job, _ in running:
            try:
                await self.queue.release(job.id, self.worker_id)
            except Exception as exc:  # its lease will expire instead
                log.warning("could not hand job %s back: %s", job.id, exc)
