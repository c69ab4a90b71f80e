"""Several engine instances behind one deployment, each request going to the least busy.

:class:`ReplicaSet` is itself an :class:`~alize.engines.base.Engine`, so the generation and
embeddings services need not know how many replicas there are: the deployment's fair queue
admits up to ``parallel × replicas`` sequences, and each sequence is routed, when it starts, to
the replica with the fewest sequences in flight (ties go to the lowest index, so a lightly loaded
deployment keeps one replica warm rather than spreading requests thin).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace

from alize.domain import Delta, Embeddings, EngineInfo, GenerationRequest
from alize.engines.base import Engine


class ReplicaSet(Engine):
    def __init__(self, replicas: Sequence[Engine]) -> None:
        if not replicas:
            raise ValueError("a replica set needs at least one engine")
        self.replicas: tuple[Engine, ...] = tuple(replicas)
        self.in_flight = [0] * len(self.replicas)
        #: sequences each replica has served since the deployment was created (for operators/tests)
        self.served = [0] * len(self.replicas)
        self._info: EngineInfo | None = None
        self._counting = 0

    @property
    def active(self) -> int:
        """Calls in progress on the replicas (streams, token counts, embeddings)."""
        return sum(self.in_flight) + self._counting

    def _pick(self) -> int:
        return min(range(len(self.replicas)), key=lambda i: (self.in_flight[i], i))

    async def start(self) -> EngineInfo:
        try:
            infos = await asyncio.gather(*(r.start() for r in self.replicas))
        except BaseException:
            await self.stop()
            raise
        first = infos[0]
        self._info = replace(first, max_sequences=sum(i.max_sequences for i in infos))
        return self._info

    async def prewarm(self) -> None:
        await self.replicas[0].prewarm()  # the code is shared by the replicas of one process

    async def stop(self) -> None:
        self._info = None
        await asyncio.gather(*(r.stop() for r in self.replicas), return_exceptions=True)

    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            return self.replicas[0].info  # raises the engine's own "not loaded" error
        return self._info

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        index = self._pick()
        self.in_flight[index] += 1
        self.served[index] += 1
        stream = self.replicas[index].generate(request)
        try:
            async for delta in stream:
                yield delta
        finally:
            self.in_flight[index] -= 1
            await stream.aclose()

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        self._counting += 1
        try:
            return await self.replicas[self._pick()].count_prompt_tokens(request)
        finally:
            self._counting -= 1

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        index = self._pick()
        self.in_flight[index] += 1
        self.served[index] += 1
        try:
            return await self.replicas[index].embed(texts)
        finally:
            self.in_flight[index] -= 1

    def worker_pids(self) -> list[int]:
        """Process ids of replicas that run in a worker process (llama.cpp), for operators."""
        pids = []
        for replica in self.replicas:
            pid = getattr(replica, "pid", None)
            if isinstance(pid, int):
                pids.append(pid)
        return pids
