"""Quick start: a deployment scaled to zero answers its first request from a small engine while
the full one loads beside it.

Why: most of a llama.cpp cold start is the KV cache, which llama.cpp allocates and zeroes whole
when it loads: ``parallel × ctx_per_slot`` cells (SmolLM2 with 16 slots of 4096 tokens: 1.5 GB
of f16, about a second of page clearing on a 2-core VM, more than everything else together).
The request that woke the deployment needs one slot. So the deployment first starts engines with
``quick_slots`` slots (same model, same per-slot context and settings, so a request gets the same
answer on either: per-slot KV keeps each sequence's cells and sums its own), serves from them at
once, and starts the full engines in the background; once they are ready, new requests go to
them (the queue's epoch advances, as for an adapter swap) and the small engines stop when the
requests that could still use them are over (:func:`alize.deployments.adapters.retire`).

Until the swap, requests past ``quick_slots`` wait inside llama.cpp's own queue rather than in
the fair queue (which admits the full ``parallel`` from the start), and the memory budget counts
the small engines' resident memory. An unload, or any other engine swap (publishing adapters),
cancels an upgrade in progress and stops what it had started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from alize.deployments.adapters import retire
from alize.deployments.replicas import ReplicaSet
from alize.domain import EngineInfo
from alize.errors import AlizeError

if TYPE_CHECKING:
    from alize.deployments.manager import Deployment
    from alize.deployments.specs import DeploymentSpec

log = logging.getLogger(__name__)

#: builds the small engines of a deployment from its spec (None: the spec asks for none)
QuickEngines = Callable[["DeploymentSpec"], ReplicaSet | None]


class Upgrade:
    """The background swap from a deployment's small engines to its full ones."""

    def __init__(self, deployment: Deployment, quick: ReplicaSet, full: ReplicaSet) -> None:
        self._deployment = deployment
        self.quick = quick
        self.full = full
        self.task: asyncio.Task[None] = asyncio.create_task(self._run(), name=f"upgrade-{deployment.name}")

    async def _run(self) -> None:
        deployment = self._deployment
        try:
            await self.full.start()
        except AlizeError as exc:
            # the small engines keep serving; the next cold start tries again
            log.error("deployment %s: the full engine failed to start: %s", deployment.name, exc.message)
            return
        async with deployment._load_lock:
            if not deployment.loaded or deployment.engine is not self.quick:
                await self.full.stop()  # unloaded or swapped meanwhile: this engine is stale
                return
            deployment.engine = self.full
            epoch = deployment.queue.advance()
        log.info("deployment %s: full engine ready, quick engine retiring", deployment.name)
        timeout = deployment.spec.engine.request_timeout_s
        await retire(self.quick, deployment.queue, epoch, timeout_s=timeout)

    async def cancel(self) -> None:
        """Stop the upgrade; the full engine, if it had started, is stopped too."""
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            await self.full.stop()


async def start_quick(deployment: Deployment, quick: ReplicaSet) -> tuple[EngineInfo, Upgrade]:
    """Start the small engines, make them the deployment's, and begin the upgrade (the caller
    holds the deployment's load lock)."""
    info = await quick.start()
    full, deployment.engine = deployment.engine, quick
    return info, Upgrade(deployment, quick, full)
