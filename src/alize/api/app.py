"""``create_app(settings)``: builds every service in the lifespan and mounts the routers.

Nothing is built at import time: each app owns its deployments, engines and services, reached
through ``app.state.services``, so tests can run several differently configured apps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from alize.api import (
    admin_catalog,
    admin_packs,
    admin_tenancy,
    admin_users,
    azure,
    batches,
    catalog_page,
    chat_completions,
    completions,
    embeddings,
    files,
    fine_tuning,
    health,
    metrics,
    models,
    moderations,
)
from alize.api.auth import AuthGate
from alize.api.batch_lines import build_worker
from alize.api.body_limit import BodySizeLimit
from alize.api.console import router as console_router
from alize.api.deps import Services
from alize.api.direct_route import DirectChatRoute
from alize.api.errors import install_error_handlers
from alize.api.hosts import HostGate, HostPolicy
from alize.api.observe import Observe
from alize.api.openapi import build_openapi
from alize.api.webchat import chat_routers
from alize.catalog.service import CatalogService
from alize.chat.retention import chat_retention_rules
from alize.chat.service import build_chat_services
from alize.config import Settings
from alize.deployments.lifecycle import IdleReaper, MemoryBudget, prewarm
from alize.deployments.manager import DeploymentManager, QueueLimits
from alize.deployments.packs import PackService
from alize.deployments.service import DeploymentService
from alize.engines.registry import EngineRegistry
from alize.gateway.embeddings import EmbeddingsService
from alize.gateway.generation import GenerationService
from alize.gateway.holds import HoldSweeper
from alize.gateway.pipeline import PolicyPipeline
from alize.gateway.safety import ContentSafety
from alize.gateway.tenancy import Tenancy, check_bind_address, server_secret
from alize.jobs.batches import BatchService
from alize.jobs.files import FileLimits, FileService
from alize.jobs.finetune.wiring import build_fine_tuning
from alize.jobs.queue import JobQueue
from alize.observability.observers import build_observability
from alize.periodic import Periodic
from alize.retention import RetentionRule, RetentionSweeper, days
from alize.safety.registry import load_moderator
from alize.store.database import Database, open_database
from alize.store.ids import new_id, utc_now

log = logging.getLogger(__name__)


async def build_services(
    settings: Settings, registry: EngineRegistry | None = None, *, serving: bool = True
) -> Services:
    """Build every service; each one's teardown is pushed on one stack as soon as it exists, so
    a failure half-way closes what was built (``Services.aclose`` unwinds the same stack).
    ``serving=False`` for an ``alize worker`` beside servers on the same data (it leaves the
    servers' own housekeeping, such as pulls being staged, alone)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stack = AsyncExitStack()
    try:
        return await _build(settings, registry, stack, serving=serving)
    except BaseException:
        await stack.aclose()
        raise


async def _build(
    settings: Settings, registry: EngineRegistry | None, stack: AsyncExitStack, *, serving: bool
) -> Services:
    db = await open_database(settings.resolved_database_url(), sqlite_synchronous=settings.sqlite_synchronous)
    stack.push_async_callback(db.close)
    manager = DeploymentManager(
        registry or EngineRegistry(),
        QueueLimits(
            max_waiting=settings.limits.queue_max,
            timeout_s=settings.limits.queue_timeout_s,
            batch_yield_s=settings.jobs.batch_yield_s,
        ),
    )
    stack.push_async_callback(manager.close)
    # the catalog lives in the database; built-in cards are (re)seeded at every start, then the
    # declared and stored deployments are created over it

    def pinned() -> set[str]:
        return {settings.default_model}  # /ready promises the default stays loaded

    models_dir = (settings.data_dir / "models").absolute()
    catalog = CatalogService(db, models_dir=models_dir, inspect_timeout_s=settings.catalog.inspect_timeout_s)
    await catalog.seed_builtins()
    memory_budget = MemoryBudget(manager, settings.catalog.memory_budget_bytes, pinned)
    manager.before_load = memory_budget.make_room
    deployment_admin = DeploymentService(db, manager, catalog, settings)
    await deployment_admin.restore()
    packs = PackService(catalog, deployment_admin, models_dir, settings.catalog)
    stack.push_async_callback(packs.close)
    if serving:
        await packs.sweep()
    generation = GenerationService(settings.limits, settings.safe_prompt)
    instance_id = new_id("gw")
    tenancy = Tenancy.build(settings, db, instance_id=instance_id)
    stack.push_async_callback(tenancy.aclose)
    holds = HoldSweeper(
        db,
        tenancy.budget,
        instance_id=instance_id,
        interval_s=settings.limits.hold_sweep_interval_s,
        # no request lives longer than its queue wait plus its generation, plus settling
        max_request_s=settings.limits.queue_timeout_s + settings.engine.request_timeout_s + 60,
    )
    embeddings = EmbeddingsService()
    # the classifier itself loads on first use
    moderator = load_moderator(settings.safety.classifier, weights_path=settings.safety.weights_path)
    safety = ContentSafety(moderator, timeout_s=settings.safety.timeout_s)
    observability = build_observability(settings.observability, manager)
    stack.callback(observability.close)
    pipeline = PolicyPipeline(
        generation, manager, tenancy, embeddings, safety=safety, observer=observability.observer
    )
    chat = build_chat_services(
        settings.chat, db, manager, pipeline, tenancy.audit, server_secret(settings), packs.preferences()
    )
    stack.callback(chat.close)
    jobs = settings.jobs
    files = FileService(
        db,
        (settings.data_dir / "files").absolute(),
        FileLimits(jobs.max_file_bytes, jobs.max_file_lines, jobs.max_line_bytes),
    )
    queue = JobQueue(db, lease_s=jobs.lease_s)
    return Services(
        settings=settings,
        db=db,
        deployments=manager,
        generation=generation,
        tenancy=tenancy,
        pipeline=pipeline,
        catalog=catalog,
        deployment_admin=deployment_admin,
        embeddings=embeddings,
        moderator=moderator,
        memory_budget=memory_budget,
        idle_reaper=IdleReaper(manager, interval_s=settings.catalog.idle_check_interval_s, pinned=pinned),
        packs=packs,
        chat=chat,
        hosts=HostPolicy(settings.allowed_hosts),
        holds=holds,
        retention=_retention(settings, db, tenancy),
        files=files,
        queue=queue,
        batches=BatchService(db, files, queue, output_expires_after_s=jobs.batch_output_expires_after_s),
        file_sweeper=Periodic("file-sweeper", jobs.file_sweep_interval_s, files.sweep),
        observability=observability,
        fine_tuning=build_fine_tuning(db, queue, files, catalog, deployment_admin, tenancy),
        exit_stack=stack,
    )


def _retention(settings: Settings, db: Database, tenancy: Tenancy) -> RetentionSweeper:
    """Every kind of stored data with a retention setting; each sweep that removes rows is audited."""
    kept = settings.retention
    rules = [
        *chat_retention_rules(db, kept),
        RetentionRule("request_logs", days(kept.request_logs_days), tenancy.metering.purge_before),
    ]

    async def report(removed: dict[str, int]) -> None:
        await tenancy.audit.append("system", "retention.purge", "retention", removed)

    return RetentionSweeper(rules, interval_s=kept.interval_s, clock=utc_now, report=report)


async def _prewarm_after(loader: asyncio.Task[object] | None, manager: DeploymentManager) -> None:
    if loader is not None:
        await asyncio.wait([loader])
    await prewarm(manager)


def _log_load_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the default deployment failed to load: %s", task.exception())


def create_app(settings: Settings | None = None, *, registry: EngineRegistry | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings, registry)
        app.state.services = services
        try:
            await services.tenancy.bootstrap(settings)
            await check_bind_address(settings, services.tenancy)
            await services.holds.start()  # releases the holds a killed predecessor left
            services.on_close(services.holds.stop)
            await services.retention.start()
            services.on_close(services.retention.stop)
            services.idle_reaper.start()
            services.on_close(services.idle_reaper.stop)
            if settings.safety.warm_up:
                await asyncio.to_thread(services.moderator.warm_up)
            # first at shutdown: requests in flight finish (and settle) before anything closes
            services.on_close(services.pipeline.drain)
            services.file_sweeper.start()
            services.on_close(services.file_sweeper.stop)
            # fine-tuning jobs always run in a server (they publish there); batches only when
            # the embedded worker is on
            worker = build_worker(services, role="serve", batches=settings.jobs.embedded_worker)
            worker.start()
            # before the drain: the worker hands its jobs back, then lines in flight settle
            services.on_close(worker.stop)
            loader: asyncio.Task[object] | None = None
            if settings.load_on_start and settings.default_model in {
                d.name for d in services.deployments.list()
            }:
                # Load in the background: /health answers at once, /ready turns 200 when loaded.
                loader = asyncio.create_task(services.deployments.get(settings.default_model).ensure_loaded())
                loader.add_done_callback(_log_load_failure)
                services.exit_stack.callback(loader.cancel)
            if settings.engine.prewarm:  # after the default's load, which it would slow down
                warmer = asyncio.create_task(_prewarm_after(loader, services.deployments))
                services.exit_stack.callback(warmer.cancel)
            yield
        finally:
            await services.aclose()

    app = FastAPI(
        title="Alizé",
        version="0.1.0",
        summary="Models as a service: OpenAI-, Mistral- and Azure-compatible endpoints on your own hardware.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.openapi = build_openapi(app)  # type: ignore[method-assign]
    for router in (health.router, models.router, chat_completions.router, completions.router, azure.router):
        app.include_router(router)
    if settings.observability.metrics_enabled:
        app.include_router(metrics.router)
    app.include_router(console_router)
    app.include_router(admin_tenancy.router)
    app.include_router(admin_users.router)
    for router in (
        embeddings.router,
        moderations.router,
        admin_catalog.router,
        admin_packs.router,
        catalog_page.router,
        files.router,
        batches.router,
        fine_tuning.router,
    ):
        app.include_router(router)
    if settings.chat.enabled:
        for router in chat_routers():
            app.include_router(router)
    # an upload may be as large as a file may be, plus the multipart envelope
    uploads = {"/v1/files": settings.jobs.max_file_bytes + 64 * 1024}
    # innermost of Alizé's gates: the hottest route without FastAPI's routing, its checks kept
    app.add_middleware(DirectChatRoute)
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_body_bytes, per_path=uploads)
    app.add_middleware(AuthGate)
    app.add_middleware(Observe)  # counts and ids every request, refused ones included
    app.add_middleware(HostGate)  # outermost: a foreign Host name reaches nothing
    return app
