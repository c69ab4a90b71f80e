"""Deployments by name: load on first use, admit through a fair queue, stop on shutdown.

A deployment is what a client calls (the ``model`` field): a model plus engine settings.
Loading happens on the first request (or at start-up for the default), and the time it took
is reported to that request as its cold start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from alize.deployments.admission import FairQueue, SlotLease
from alize.domain import EngineInfo
from alize.engines.base import Engine, EngineConfig
from alize.engines.registry import EngineRegistry
from alize.errors import ConflictError, ModelNotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    name: str
    model_id: str
    engine: EngineConfig
    owned_by: str = "alize"
    created: int = field(default_factory=lambda: int(time.time()))
    #: catalog card fields shown by ``GET /v1/models`` (JSON-ready)
    card: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_waiting: int
    timeout_s: float


class Deployment:
    def __init__(self, spec: DeploymentSpec, engine: Engine, limits: QueueLimits) -> None:
        self.spec = spec
        self.engine = engine
        self.queue = FairQueue(
            spec.engine.parallel, max_waiting=limits.max_waiting, timeout_s=limits.timeout_s
        )
        self.last_used = time.monotonic()
        self.loaded = False
        self._load_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.spec.name

    async def ensure_loaded(self) -> tuple[EngineInfo, float | None]:
        """The engine's info, and the cold-start seconds if this call had to load it."""
        self.last_used = time.monotonic()
        if self.loaded:
            return self.engine.info, None
        async with self._load_lock:
            if self.loaded:
                return self.engine.info, None
            started = time.perf_counter()
            info = await self.engine.start()
            self.loaded = True
            cold = time.perf_counter() - started
            log.info("deployment %s loaded in %.2f s", self.name, cold)
            return info, cold

    async def admit(self, caller: str) -> SlotLease:
        return await self.queue.acquire(caller)

    async def unload(self) -> None:
        async with self._load_lock:
            self.loaded = False
            await self.engine.stop()


class DeploymentManager:
    def __init__(self, registry: EngineRegistry, limits: QueueLimits) -> None:
        self._registry = registry
        self._limits = limits
        self._deployments: dict[str, Deployment] = {}

    def add(self, spec: DeploymentSpec) -> Deployment:
        if spec.name in self._deployments:
            raise ConflictError(f"a deployment named '{spec.name}' already exists", param="name")
        deployment = Deployment(spec, self._registry.create(spec.engine), self._limits)
        self._deployments[spec.name] = deployment
        return deployment

    def get(self, name: str) -> Deployment:
        deployment = self._deployments.get(name)
        if deployment is None:
            raise ModelNotFoundError(name)
        return deployment

    def list(self) -> list[Deployment]:
        return sorted(self._deployments.values(), key=lambda d: d.name)

    async def remove(self, name: str) -> None:
        deployment = self.get(name)
        del self._deployments[name]
        await deployment.unload()

    async def close(self) -> None:
        await asyncio.gather(*(d.unload() for d in self._deployments.values()), return_exceptions=True)
        self._deployments.clear()
