"""Fine-tuned models served as LoRA adapters on their base's deployment.

A fine-tuned model (``ft:<base>:<suffix>:<job>``) is a deployment of its own for clients, the
ledger and prices, but it owns no engine: :class:`AdapterEngine` forwards to the *host*
deployment's engine (the base's llama.cpp workers) with the request's adapter set, and the two
share the host's fair queue, because they share its slots. So several fine-tuned models and the
base itself run on one loaded copy of the base weights, batched together by llama.cpp.

Publishing an adapter changes the set of adapters the host's workers load, which llama.cpp only
reads at start-up. :func:`swap_engine` starts the new workers while the old ones keep serving,
switches new requests to them once they are ready, and stops the old ones only when every
request that could still be using them is over (the queue's lease epoch, then the engine's own
in-flight count). No request in flight is cut off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from alize.deployments.replicas import ReplicaSet
from alize.domain import Delta, Embeddings, EngineInfo, GenerationRequest
from alize.engines.base import Engine
from alize.errors import UnsupportedFeatureError

if TYPE_CHECKING:
    from alize.deployments.admission import FairQueue
    from alize.deployments.manager import Deployment
    from alize.deployments.specs import DeploymentSpec

log = logging.getLogger(__name__)


class AdapterEngine(Engine):
    """The host deployment's engine, with ``adapter`` applied to every request."""

    def __init__(self, host: Callable[[], Deployment], adapter: str) -> None:
        # the host is looked up at each call: a host replaced by new settings is found again
        self._host = host
        self.adapter = adapter

    async def start(self) -> EngineInfo:
        info, _ = await self._host().ensure_loaded()
        return info

    async def stop(self) -> None:
        """Nothing to free: the host owns the workers (and unloads them when it is idle)."""

    @property
    def info(self) -> EngineInfo:
        return self._host().engine.info

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        stream = self._host().engine.generate(replace(request, adapter=self.adapter))
        try:
            async for delta in stream:
                yield delta
        finally:
            await stream.aclose()

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return await self._host().engine.count_prompt_tokens(request)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        raise UnsupportedFeatureError("a fine-tuned chat model has no embeddings", param="model")


async def retire(old: ReplicaSet, queue: FairQueue, epoch: int, *, timeout_s: float) -> None:
    """Stop ``old`` once no request admitted before the swap can still use it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    await queue.drained(epoch, timeout_s=timeout_s)
    # polled: a swap is rare and short, and an event would need every engine call to signal it
    while old.active and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if old.active:
        log.warning("stopping the previous engine with %d calls still in flight (timeout)", old.active)
    await old.stop()


async def swap_engine(
    host: Deployment, spec: DeploymentSpec, engine: ReplicaSet, *, timeout_s: float
) -> asyncio.Task[None]:
    """Give ``host`` new settings and engine without interrupting it; returns the task that
    retires the old engine."""
    async with host._load_lock:
        old = host.engine
        if host.loaded:
            await engine.start()  # the old engine keeps serving while the new one loads
        host.engine, host.spec = engine, spec
        epoch = host.queue.advance()
    log.info("deployment %s now serves %d adapter(s)", host.name, len(spec.engine.adapters))
    return asyncio.create_task(retire(old, host.queue, epoch, timeout_s=timeout_s))
