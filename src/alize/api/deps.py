"""Services the routers reach through ``app.state`` (built in the lifespan, never globals)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from alize.api.hosts import HostPolicy
from alize.catalog.service import CatalogService
from alize.chat.service import ChatServices
from alize.config import Settings
from alize.deployments.lifecycle import IdleReaper, MemoryBudget
from alize.deployments.manager import DeploymentManager
from alize.deployments.packs import PackService
from alize.deployments.service import DeploymentService
from alize.gateway.embeddings import EmbeddingsService
from alize.gateway.generation import GenerationService
from alize.gateway.holds import HoldSweeper
from alize.gateway.pipeline import PolicyPipeline
from alize.gateway.tenancy import Tenancy
from alize.jobs.batches import BatchService
from alize.jobs.files import FileService
from alize.jobs.finetune.service import FineTuningService
from alize.jobs.queue import JobQueue
from alize.observability.observers import Observability
from alize.periodic import Periodic
from alize.retention import RetentionSweeper
from alize.safety.moderator import Moderator
from alize.store.database import Database


@dataclass
class Services:
    """Everything a request may need; one instance per app, built in the lifespan.

    The one teardown: whatever is built or started registers how it ends on ``exit_stack`` the
    moment it exists (:meth:`on_close`), and :meth:`aclose` unwinds it in reverse, so a service
    is closed exactly when it was built, whether start-up failed half-way or the app stopped."""

    settings: Settings
    db: Database
    deployments: DeploymentManager
    generation: GenerationService
    #: projects, keys, limits, budgets, metering, audit (see alize.gateway.tenancy)
    tenancy: Tenancy
    #: the policy pipeline every inference request goes through
    pipeline: PolicyPipeline
    #: model cards in the database (alize.catalog.service)
    catalog: CatalogService
    #: run-time deployments: create/update/delete, persisted and restored at start
    deployment_admin: DeploymentService
    embeddings: EmbeddingsService
    #: the content classifier behind /v1/moderations and the deployments' filters
    moderator: Moderator
    #: estimated memory of loaded deployments, LRU eviction before a load
    memory_budget: MemoryBudget
    #: unloads deployments idle past their timeout (scale to zero)
    idle_reaper: IdleReaper
    #: model packs: what can be pulled from the package index, and the pulls running
    packs: PackService
    #: the chat web app: users, sessions, conversations, documents, replies (alize.chat)
    chat: ChatServices
    #: the host names this server answers to (DNS-rebinding defence, the chat's Origin check)
    hosts: HostPolicy
    #: heartbeats this process and releases budget holds that dead processes left behind
    holds: HoldSweeper
    #: deletes what is older than the retention settings allow
    retention: RetentionSweeper
    #: uploaded files and batch outputs (alize.jobs.files)
    files: FileService
    #: the durable job queue batches wait in
    queue: JobQueue
    batches: BatchService
    #: removes expired files and interrupted uploads
    file_sweeper: Periodic
    #: metrics, the request log and traces, fed by the pipeline's observer
    observability: Observability
    #: fine-tuning jobs: create, start, cancel, and their records (alize.jobs.finetune)
    fine_tuning: FineTuningService
    #: how everything above ends, last built first closed
    exit_stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    def on_close(self, close: Callable[[], Awaitable[object]]) -> None:
        """Await ``close`` at :meth:`aclose`, before what was registered earlier."""
        self.exit_stack.push_async_callback(close)

    async def aclose(self) -> None:
        await self.exit_stack.aclose()


async def get_services(request: Request) -> Services:
    """The app's services. ``async``: FastAPI runs a plain ``def`` dependency in its thread
    pool, a thread hop on every request for one attribute read."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def caller_identity(request: Request, user: str | None = None) -> str:
    """Who waits in the fair queue: the API key once keys exist, else the end user or address."""
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        return f"key:{principal.key_id}"
    if user:
        return f"user:{user}"
    return f"addr:{request.client.host if request.client else 'unknown'}"
