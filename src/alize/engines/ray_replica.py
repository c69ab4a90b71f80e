"""One Ray Serve replica: Alizé's own llama.cpp engine (its supervised worker process) inside
a Serve replica actor, on whichever node of the cluster Serve placed it.

:mod:`alize.engines.ray` turns this class into a ``@serve.deployment`` when it deploys, so
this module imports no Ray and is imported by Ray only on the cluster's workers (where Alizé
and the model file must be installed at the same paths as on the gateway). Serve calls
:meth:`check_health` every ``health_check_period_s``: a dead llama.cpp worker fails it, and
Serve replaces the replica. The replica's actor process is the worker's stdin lifeline, so a
replica killed with its actor never leaves a model in memory.

Every stream starts with the replica's name (``host:pid``) before the first delta: the gateway
learns which replica took the request, and that the request was accepted, before any token.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncGenerator, Sequence

from alize.domain import Delta, Embeddings, EngineInfo, GenerationRequest
from alize.engines.base import EngineConfig
from alize.engines.llamacpp.engine import LlamaCppEngine


class LlamaCppReplica:
    # Ray actors (and so Serve replicas) may have an async constructor: Serve reports the
    # replica running only once it returns, that is once the model is loaded.
    async def __init__(self, config: EngineConfig) -> None:  # type: ignore[misc]
        self._engine = LlamaCppEngine(config)
        self._info = await self._engine.start()
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def describe(self) -> tuple[str, EngineInfo, int | None]:
        """The replica's name, what its model can do and its llama.cpp worker's pid."""
        return self.name, self._info, self._engine.pid

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[str | Delta, None]:
        yield self.name
        stream = self._engine.generate(request)
        try:
            async for delta in stream:
                yield delta
        finally:  # a cancelled call (the client went away) frees the llama.cpp slot at once
            await stream.aclose()

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return await self._engine.count_prompt_tokens(request)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return await self._engine.embed(texts)

    async def check_health(self) -> None:
        await self._engine.check()

    async def __del__(self) -> None:
        await self._engine.stop()
