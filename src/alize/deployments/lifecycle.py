"""When deployments leave memory: idle timeouts (scale to zero) and a memory budget (LRU eviction).

Both act only on deployments with no request holding or waiting for a slot, so unloading never
cuts a request off; the next request reloads the deployment and reports its cold start.

Memory is *estimated* before loading (the point is to decide before paying): the weights' size
plus the KV cache of every slot plus llama.cpp's prompt cache and a fixed per-process overhead,
times the replicas. The KV cache is sized from the model's own metadata: the K and V values per
token over all layers (``layers × KV heads × (key + value head size)``, read from the GGUF onto
the card, :attr:`alize.catalog.gguf.GGUFInfo.kv_values_per_token`) times the bytes of one value
in the deployment's cache type: 2 for f16, llama.cpp's default (SmolLM2-135M: 30 × 3 × 128 × 2 =
23,040 bytes a token, what llama.cpp allocates; tests/deployments/test_memory_estimate.py), 34/32
for q8_0 and 18/32 for q4_0 (blocks of 32 values with a scale), which `alize models tune` may
choose.
Only a model whose metadata says nothing of its attention falls back on ``parameters ** (2/3)``
bytes, a rough guess that overshoots models with grouped-query attention (262 KB for SmolLM2).
It is a planning figure, not an accounting one: once a deployment whose engines run
in worker processes (llama.cpp) is loaded, the budget counts what those processes really hold,
their resident memory read from ``/proc/<pid>/status`` each time it adds up (so a KV cache that
grows with use is seen growing). In-process engines (PyTorch, remote) keep their estimate.
The trade-off: llama.cpp clears its KV buffer when it loads, so the KV cache is resident at
once, but the RAM prompt cache (``cache_ram_mib``) fills only with use (SmolLM2 with 4 ×
2048-token slots: 360 MiB resident after loading vs 594 MiB planned, 256 of them prompt cache,
docs/benchmarks.md), so the budget may admit a deployment that later grows past it; the next
load then sees the growth and evicts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from alize.deployments.manager import Deployment, DeploymentManager
from alize.engines.base import EngineConfig
from alize.errors import AlizeError, EngineUnavailableError
from alize.periodic import Periodic

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: resident memory of a worker process before any model: runtime, buffers, compute graph
PROCESS_OVERHEAD_BYTES = 64 * MIB
#: bytes per cached K or V value: f16, llama.cpp's default cache type
KV_BYTES_PER_VALUE = 2
#: bytes per cached value of each cache type a deployment may use (q8_0/q4_0: 32-value blocks)
KV_BYTES_BY_TYPE = {"f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
#: a PyTorch model in process: the framework's own allocations beside the weights
TORCH_OVERHEAD_BYTES = 160 * MIB


class MemoryBudgetExceededError(EngineUnavailableError):
    default_code = "memory_budget_exceeded"


def kv_bytes_per_token(
    kv_values_per_token: int | None, parameter_count: int | None, weights: int, cache_type: str = "f16"
) -> int:
    """Bytes of KV cache one token takes: from the model's metadata when known, else the guess."""
    if kv_values_per_token:
        return int(kv_values_per_token * KV_BYTES_BY_TYPE.get(cache_type, KV_BYTES_PER_VALUE))
    return int((parameter_count or weights) ** (2 / 3))


def estimate_memory(
    engine: EngineConfig,
    *,
    size_bytes: int | None,
    parameter_count: int | None,
    replicas: int,
    kv_values_per_token: int | None = None,
) -> int:
    """Bytes a loaded deployment is expected to hold (see the module docstring)."""
    if engine.kind == "remote":
        return 0
    weights = size_bytes or 0
    if engine.kind == "torch":
        return replicas * (weights + TORCH_OVERHEAD_BYTES)
    kv_per_token = kv_bytes_per_token(kv_values_per_token, parameter_count, weights, engine.kv_cache_type)
    kv = engine.parallel * engine.ctx_per_slot * kv_per_token
    return replicas * (weights + kv + engine.cache_ram_mib * MIB + PROCESS_OVERHEAD_BYTES)


def resident_bytes(pids: list[int]) -> int | None:
    """Sum of the processes' resident memory (``VmRSS``), or None when none can be read."""
    total, seen = 0, False
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                seen = True
                break
    return total if seen else None


def held_bytes(deployment: Deployment) -> int:
    """What a loaded deployment holds: measured for worker processes, else estimated."""
    measured = resident_bytes(deployment.engine.worker_pids()) if deployment.loaded else None
    return measured if measured is not None else deployment.spec.memory_bytes


class MemoryBudget:
    """Before a load, unload least-recently-used idle deployments until the new one fits.

    ``limit_bytes`` 0 means no budget. Pinned deployments (the default one, which ``/ready``
    promises is loaded) are never evicted. If the deployment cannot fit even after evicting
    everything evictable, the load is refused with a 503 rather than risking the machine."""

    def __init__(
        self, manager: DeploymentManager, limit_bytes: int, pinned: Callable[[], set[str]] | None = None
    ) -> None:
        self._manager = manager
        self.limit_bytes = limit_bytes
        self._pinned = pinned or (lambda: set())
        self._lock = asyncio.Lock()
        self.evictions = 0

    def used_bytes(self, exclude: Deployment | None = None) -> int:
        """Memory held by loaded deployments (measured where it can be, see :func:`held_bytes`)."""
        return sum(held_bytes(d) for d in self._manager.list() if d.loaded and d is not exclude)

    async def make_room(self, deployment: Deployment) -> None:
        if self.limit_bytes <= 0:
            return
        need = deployment.spec.memory_bytes
        if need > self.limit_bytes:
            raise MemoryBudgetExceededError(
                f"'{deployment.name}' needs about {need // MIB} MiB, more than the whole memory budget "
                f"({self.limit_bytes // MIB} MiB); lower its slots or context, or raise the budget",
                retry_after=60,
            )
        async with self._lock:
            pinned = self._pinned()
            while self.used_bytes(exclude=deployment) + need > self.limit_bytes:
                candidates = [
                    d
                    for d in self._manager.list()
                    if d.loaded and d is not deployment and not d.busy and d.name not in pinned
                ]
                if not candidates:
                    raise MemoryBudgetExceededError(
                        f"loading '{deployment.name}' (about {need // MIB} MiB) would exceed the memory "
                        f"budget ({self.limit_bytes // MIB} MiB, {self.used_bytes() // MIB} MiB in use) "
                        "and every loaded deployment is busy or pinned; retry later",
                        retry_after=10,
                    )
                victim = min(candidates, key=lambda d: d.last_used)
                log.info(
                    "memory budget: unloading %s (least recently used) to make room for %s",
                    victim.name,
                    deployment.name,
                )
                await victim.unload()
                self.evictions += 1


async def prewarm(manager: DeploymentManager) -> None:
    """Prepare every deployment that is not loaded (:meth:`alize.engines.base.Engine.prewarm`),
    one after the other, so that its first cold start pays for the model only (a failure is
    logged: the load itself will report it)."""
    for deployment in manager.list():
        if deployment.loaded:
            continue
        try:
            await deployment.engine.prewarm()
        except (ImportError, OSError, ValueError, AlizeError) as exc:
            log.warning("could not prepare %s: %s", deployment.name, exc)


class IdleReaper:
    """A background task that unloads deployments idle past their ``idle_timeout_s``."""

    def __init__(
        self,
        manager: DeploymentManager,
        *,
        interval_s: float = 0.5,
        pinned: Callable[[], set[str]] | None = None,
    ) -> None:
        self._manager = manager
        self._pinned = pinned or (lambda: set())
        self._loop = Periodic("idle-reaper", interval_s, self.reap_once)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def reap_once(self) -> list[str]:
        """Unload every deployment idle past its timeout now; returns their names."""
        now = time.monotonic()
        pinned = self._pinned()
        unloaded = []
        for deployment in self._manager.list():
            timeout = deployment.spec.idle_timeout_s
            if (
                timeout > 0
                and deployment.loaded
                and not deployment.busy
                and deployment.name not in pinned
                and now - deployment.last_used >= timeout
            ):
                log.info("deployment %s idle for %.0f s: unloading (scale to zero)", deployment.name, timeout)
                await deployment.unload()
                unloaded.append(deployment.name)
        return unloaded
