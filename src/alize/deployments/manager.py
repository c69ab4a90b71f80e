"""Deployments by name: load on first use, admit through a fair queue, unload when idle.

A deployment is what a client calls (the ``model`` field): a model plus engine settings and a
number of replicas (a :class:`~alize.deployments.replicas.ReplicaSet`). Loading happens on the
first request (or at start-up for the default), and the time it took is reported to that request
as its cold start. Before a load, :class:`~alize.deployments.lifecycle.MemoryBudget` makes room by
unloading the least recently used idle deployments; :class:`~alize.deployments.lifecycle.IdleReaper`
unloads deployments idle past their timeout (scale to zero). Deployments are added and removed at
run time; the manager holds only what is live, the database what should be (``service.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from alize.deployments.adapters import AdapterEngine, swap_engine
from alize.deployments.admission import FairQueue, Lane, SlotLease
from alize.deployments.coldstart import ColdStarts
from alize.deployments.fallbacks import fallback_chain
from alize.deployments.quickstart import QuickEngines, Upgrade, start_quick
from alize.deployments.replicas import ReplicaSet
from alize.deployments.specs import DeploymentSpec
from alize.domain import EngineInfo
from alize.engines.affinity import affinity_slack
from alize.engines.base import LoraAdapter
from alize.engines.registry import EngineRegistry
from alize.errors import ConflictError, ModelNotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_waiting: int
    timeout_s: float
    #: how long after an interactive request arrives no batch line may start (admission.py)
    batch_yield_s: float = 0.0


#: called before a deployment loads, to make room for it (may unload others or refuse)
BeforeLoad = Callable[["Deployment"], Awaitable[None]]


class DeploymentHold:
    """One request's claim on a loaded deployment; release exactly once (idempotent)."""

    __slots__ = ("_deployment", "_released")

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._deployment._holds -= 1


class Deployment:
    def __init__(
        self,
        spec: DeploymentSpec,
        engine: ReplicaSet,
        limits: QueueLimits,
        before_load: BeforeLoad | None = None,
        *,
        queue: FairQueue | None = None,
        lookup: Callable[[str], Deployment | None] | None = None,
        quick: QuickEngines | None = None,
    ) -> None:
        self.spec = spec
        self._lookup = lookup
        self.engine = engine
        slots = spec.engine.parallel * spec.replica_ceiling
        #: small engines to answer a cold start while ``engine`` loads (see quickstart.py)
        self._quick = quick
        self._upgrade: Upgrade | None = None
        self.queue = queue or FairQueue(
            slots,
            max_waiting=limits.max_waiting,
            timeout_s=limits.timeout_s,
            batch_yield_s=limits.batch_yield_s,
        )
        self.last_used = time.monotonic()
        self.loaded = False
        self.loads = 0
        #: how long the loads took (shown by GET /v1/models and the catalog)
        self.cold_starts = ColdStarts()
        self._holds = 0
        self._before_load = before_load
        self._load_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def busy(self) -> bool:
        """Requests hold, wait for or are about to take a slot: unloading now would cut them off."""
        return self.queue.busy > 0 or self.queue.waiting > 0 or self._holds > 0

    def fallbacks(self) -> list[Deployment]:
        """The deployments to try, in order, when this one cannot serve a request (looked up
        by name at each call, so a fallback replaced or removed since is found or skipped)."""
        if self._lookup is None or not self.spec.fallbacks:
            return []
        return fallback_chain(self.name, self.spec.fallbacks, self._lookup)

    def hold(self) -> DeploymentHold:
        """Keep the deployment loaded until the hold is released: between loading it and taking
        a slot (counting prompt tokens, limits, budget) the idle reaper or the memory budget
        could otherwise unload the engine, under a short idle timeout, and cut the request off."""
        self._holds += 1
        return DeploymentHold(self)

    async def ensure_loaded(self) -> tuple[EngineInfo, float | None]:
        """The engine's info, and the cold-start seconds if this call had to load it."""
        self.last_used = time.monotonic()
        if self.loaded:
            return self.engine.info, None
        async with self._load_lock:
            if self.loaded:
                return self.engine.info, None
            started = time.perf_counter()
            if self._before_load is not None:
                await self._before_load(self)
            quick = self._quick(self.spec) if self._quick is not None else None
            if quick is not None:
                info, self._upgrade = await start_quick(self, quick)
            else:
                info = await self.engine.start()
            self.loaded = True
            self.loads += 1
            self.last_used = time.monotonic()
            cold = time.perf_counter() - started
            self.cold_starts.record(cold)
            log.info("deployment %s loaded in %.2f s", self.name, cold)
            return info, cold

    async def admit(self, caller: str, lane: Lane = "interactive") -> SlotLease:
        return await self.queue.acquire(caller, lane)

    async def unload(self) -> None:
        async with self._load_lock:
            upgrade, self._upgrade = self._upgrade, None
            if upgrade is not None:  # cancelling is safe under the lock: its wait for it ends
                await upgrade.cancel()
            was_loaded, self.loaded = self.loaded, False
            await self.engine.stop()
            if upgrade is not None:
                await upgrade.quick.stop()
                if self.engine is upgrade.quick:  # the next load starts from the full engine again
                    self.engine = upgrade.full
            if was_loaded:
                log.info("deployment %s unloaded", self.name)


def _shape(spec: DeploymentSpec) -> tuple[object, ...]:
    """What only a reload changes: the model and engine settings, and the replica count of a
    deployment that runs its own engines (one that places its replicas rescales live)."""
    placed = spec.engine.scaling is not None
    return (spec.model_id, replace(spec.engine, scaling=None), placed, None if placed else spec.replicas)


class DeploymentManager:
    def __init__(
        self,
        registry: EngineRegistry,
        limits: QueueLimits,
        *,
        before_load: BeforeLoad | None = None,
    ) -> None:
        self._registry = registry
        self._limits = limits
        self._deployments: dict[str, Deployment] = {}
        self.before_load = before_load
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def registry(self) -> EngineRegistry:
        return self._registry

    def add(self, spec: DeploymentSpec) -> Deployment:
        if spec.name in self._deployments:
            raise ConflictError(f"a deployment named '{spec.name}' already exists", param="name")
        if spec.adapter_host is not None:
            host_name = spec.adapter_host
            host = self.get(host_name)
            if all(a.name != spec.model_id for a in host.spec.engine.adapters):
                raise ConflictError(
                    f"'{host_name}' does not load the adapter '{spec.model_id}'", param="model"
                )
            adapter = AdapterEngine(lambda: self.get(host_name), spec.model_id)
            deployment = Deployment(
                spec, ReplicaSet([adapter]), self._limits, queue=host.queue, lookup=self.find
            )
        else:
            deployment = Deployment(
                spec,
                self._replica_set(spec),
                self._limits,
                self._before_load,
                lookup=self.find,
                quick=self._quick_engines,
            )
        self._deployments[spec.name] = deployment
        return deployment

    async def publish_adapters(self, host_name: str, adapters: tuple[LoraAdapter, ...]) -> None:
        """Load exactly ``adapters`` on ``host_name``'s workers, without interrupting it: new
        workers start beside the old ones, new requests go to them once they are ready, and the
        old ones stop when the requests they serve are over."""
        host = self.get(host_name)
        if host.spec.adapter_host is not None:
            raise ConflictError(f"'{host_name}' is itself a fine-tuned model", param="model")
        if adapters == host.spec.engine.adapters:
            return
        spec = replace(host.spec, engine=replace(host.spec.engine, adapters=adapters))
        engine = self._replica_set(spec)
        task = await swap_engine(host, spec, engine, timeout_s=spec.engine.request_timeout_s)
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _replica_set(self, spec: DeploymentSpec) -> ReplicaSet:
        """The deployment's engines: ``replicas`` of them, or one that places its own replicas
        (Ray Serve, ``engine.scaling`` set). Affinity yields to the least busy replica when the
        one holding a prompt's prefix has half its slots more in flight, or no free slot."""
        count = 1 if spec.engine.scaling is not None else spec.replicas
        engines = [self._registry.create(spec.engine) for _ in range(count)]
        parallel = spec.engine.parallel
        return ReplicaSet(engines, affinity_slack=affinity_slack(parallel), slots=parallel)

    def _quick_engines(self, spec: DeploymentSpec) -> ReplicaSet | None:
        """Small engines for a cold start, when the spec asks for them (quickstart.py); read
        from the spec at load time, so engines swapped for new adapters are followed."""
        slots = spec.quick_start_slots
        if not slots or slots >= spec.engine.parallel:
            return None
        quick = replace(spec.engine, parallel=slots)
        return ReplicaSet([self._registry.create(quick) for _ in range(spec.replicas)])

    def hosted_by(self, host_name: str) -> list[Deployment]:
        """The fine-tuned models served as adapters on ``host_name``."""
        return [d for d in self._deployments.values() if d.spec.adapter_host == host_name]

    async def _before_load(self, deployment: Deployment) -> None:
        if self.before_load is not None:
            await self.before_load(deployment)

    def get(self, name: str) -> Deployment:
        deployment = self._deployments.get(name)
        if deployment is None:
            raise ModelNotFoundError(name)
        return deployment

    def find(self, name: str) -> Deployment | None:
        return self._deployments.get(name)

    def list(self) -> list[Deployment]:
        return sorted(self._deployments.values(), key=lambda d: d.name)

    async def remove(self, name: str) -> None:
        deployment = self.get(name)
        del self._deployments[name]
        await deployment.unload()

    def retune(self, spec: DeploymentSpec) -> Deployment:
        """Swap settings that need no reload (prices, description, content filters) in place: the
        loaded engines keep serving, and the next request sees the new settings."""
        deployment = self.get(spec.name)
        old = deployment.spec
        if _shape(spec) != _shape(old):
            raise ValueError(f"'{spec.name}': engine settings changed; use replace()")
        deployment.spec = spec
        return deployment

    async def rescale(self, spec: DeploymentSpec) -> Deployment:
        """New replica bounds for an engine that places its own replicas (Ray Serve), applied
        while it serves: the queue admits for the new ceiling, the loaded engine rescales."""
        deployment = self.get(spec.name)
        scaling = spec.engine.scaling
        if scaling is None:
            raise ValueError(f"'{spec.name}' has a fixed set of replicas; use replace()")
        self.retune(spec)
        deployment.queue.slots = spec.engine.parallel * spec.replica_ceiling
        if deployment.loaded:
            await deployment.engine.rescale(scaling)
        return deployment

    async def replace(self, spec: DeploymentSpec) -> Deployment:
        """Swap a deployment's settings: the old engines stop, the new ones load on next use."""
        old = self.get(spec.name)
        del self._deployments[spec.name]
        try:
            new = self.add(spec)
        except BaseException:
            self._deployments[spec.name] = old
            raise
        await old.unload()
        return new

    async def close(self) -> None:
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await asyncio.gather(*(d.unload() for d in self._deployments.values()), return_exceptions=True)
        self._deployments.clear()
