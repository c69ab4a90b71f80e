"""``create_app(settings)``: builds every service in the lifespan and mounts the routers.

Nothing is built at import time: each app owns its deployments, engines and services, reached
through ``app.state.services``, so tests can run several differently configured apps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from alize.api import azure, chat, completions, health, models
from alize.api.body_limit import BodySizeLimit
from alize.api.deps import Services
from alize.api.errors import install_error_handlers
from alize.catalog.sources import smollm2_gguf_path
from alize.config import DeploymentSettings, Settings
from alize.deployments.manager import DeploymentManager, DeploymentSpec, QueueLimits
from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry
from alize.gateway.generation import GenerationService
from alize.store.database import open_database

log = logging.getLogger(__name__)


def engine_config(settings: Settings, deployment: DeploymentSettings) -> EngineConfig:
    engine = settings.engine
    return EngineConfig(
        kind=deployment.engine,
        model_path=deployment.model_path
        or (smollm2_gguf_path() if deployment.engine == "llamacpp" else None),
        parallel=deployment.parallel or engine.parallel,
        ctx_per_slot=deployment.ctx_per_slot or engine.ctx_per_slot,
        threads=engine.threads,
        batch_size=engine.batch_size,
        cache_ram_mib=engine.cache_ram_mib,
        kv_unified=engine.kv_unified,
        load_timeout_s=engine.load_timeout_s,
        request_timeout_s=engine.request_timeout_s,
        restart_backoff_s=engine.restart_backoff_s,
    )


async def build_services(settings: Settings, registry: EngineRegistry | None = None) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await open_database(settings.resolved_database_url())
    manager = DeploymentManager(
        registry or EngineRegistry(),
        QueueLimits(max_waiting=settings.limits.queue_max, timeout_s=settings.limits.queue_timeout_s),
    )
    for declared in settings.deployments:
        manager.add(
            DeploymentSpec(
                name=declared.name,
                model_id=declared.name,
                engine=engine_config(settings, declared),
            )
        )
    return Services(
        settings=settings,
        db=db,
        deployments=manager,
        generation=GenerationService(manager, settings.limits, settings.safe_prompt),
    )


def _log_load_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the default deployment failed to load: %s", task.exception())


def create_app(settings: Settings | None = None, *, registry: EngineRegistry | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings, registry)
        app.state.services = services
        loader: asyncio.Task[object] | None = None
        if settings.load_on_start:
            names = {d.name for d in services.deployments.list()}
            if settings.default_model in names:
                # Load in the background: /health answers at once, /ready turns 200 when loaded.
                loader = asyncio.create_task(services.deployments.get(settings.default_model).ensure_loaded())
                loader.add_done_callback(_log_load_failure)
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
            await services.deployments.close()
            await services.db.close()

    app = FastAPI(
        title="Alizé",
        version="0.1.0",
        summary="Models as a service: OpenAI-, Mistral- and Azure-compatible endpoints on your own hardware.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in (health.router, models.router, chat.router, completions.router, azure.router):
        app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_body_bytes)
    return app
