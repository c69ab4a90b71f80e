"""Several engine instances behind one deployment, each sequence routed by
:class:`~alize.deployments.routing.Router` (least outstanding, health, prefix affinity).

:class:`ReplicaSet` is itself an :class:`~alize.engines.base.Engine`, so the generation and
embeddings services need not know how many replicas there are: the deployment's fair queue
admits up to ``parallel × replicas`` sequences, and each one is routed when it starts.

Health: a replica whose engine reports itself unavailable (its worker died, its upstream is
unreachable, its Ray replica is gone) is taken out of routing at once; every
``health_interval_s`` each replica's :meth:`~alize.engines.base.Engine.check` runs, which takes
out a replica that fails it and brings back one that passes. A sequence that fails that way
*before its first token* is sent to another replica (the client sees nothing); one that fails
later ends with the engine's error (a final SSE error event), and the next goes elsewhere.
A replica set of one engine that places its own replicas (Ray Serve) routes nothing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace

from alize.deployments.routing import Router
from alize.domain import Delta, Embeddings, EngineInfo, GenerationRequest
from alize.engines.affinity import prefix_keys, reply_key
from alize.engines.base import Engine, ReplicaScaling
from alize.errors import EngineUnavailableError

log = logging.getLogger(__name__)

#: seconds between two rounds of health checks, and the most one check may take
HEALTH_INTERVAL_S = 5.0
HEALTH_TIMEOUT_S = 5.0


class ReplicaSet(Engine):
    def __init__(
        self,
        replicas: Sequence[Engine],
        *,
        affinity: bool = True,
        affinity_slack: int = 2,
        slots: int | None = None,
        health_interval_s: float = HEALTH_INTERVAL_S,
    ) -> None:
        if not replicas:
            raise ValueError("a replica set needs at least one engine")
        self.replicas: tuple[Engine, ...] = tuple(replicas)
        self.router = Router(
            len(self.replicas), affinity=affinity, affinity_slack=affinity_slack, slots=slots
        )
        self._health_interval_s = health_interval_s
        self._health: asyncio.Task[None] | None = None
        self._info: EngineInfo | None = None
        self._counting = 0

    @property
    def in_flight(self) -> list[int]:
        return [r.in_flight for r in self.router.replicas]

    @property
    def served(self) -> list[int]:
        """Sequences each replica has served since the deployment was created (for operators)."""
        return [r.served for r in self.router.replicas]

    @property
    def healthy(self) -> list[bool]:
        return [r.healthy for r in self.router.replicas]

    @property
    def active(self) -> int:
        """Calls in progress on the replicas (streams, token counts, embeddings)."""
        return sum(self.in_flight) + self._counting

    async def start(self) -> EngineInfo:
        try:
            infos = await asyncio.gather(*(r.start() for r in self.replicas))
        except BaseException:
            await self.stop()
            raise
        for index in range(len(self.replicas)):
            self.router.mark_up(index)
        first = infos[0]
        self._info = replace(first, max_sequences=sum(i.max_sequences for i in infos))
        if len(self.replicas) > 1 and self._health is None:
            self._health = asyncio.create_task(self._health_loop())
        return self._info

    async def prewarm(self) -> None:
        await self.replicas[0].prewarm()  # the code is shared by the replicas of one process

    async def stop(self) -> None:
        self._info = None
        health, self._health = self._health, None
        if health is not None:
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health
        await asyncio.gather(*(r.stop() for r in self.replicas), return_exceptions=True)

    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            return self.replicas[0].info  # raises the engine's own "not loaded" error
        return self._info

    # ------------------------------------------------------------------ health

    async def check_replicas(self) -> list[bool]:
        """One round of health checks: take out the replicas that fail, bring back the others."""
        results = await asyncio.gather(
            *(asyncio.wait_for(r.check(), HEALTH_TIMEOUT_S) for r in self.replicas), return_exceptions=True
        )
        for index, result in enumerate(results):
            state = self.router.replicas[index]
            if isinstance(result, BaseException):
                if state.healthy:
                    log.warning("replica %d failed its health check: %s", index, _reason(result))
                self.router.mark_down(index, _reason(result))
            elif not state.healthy:
                log.info("replica %d passed its health check; back in routing", index)
                self.router.mark_up(index)
        return self.healthy

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval_s)
            try:
                await self.check_replicas()
            except Exception:  # a check must never end the loop
                log.exception("health checks failed")

    def _failed(self, index: int, exc: EngineUnavailableError) -> None:
        if self.router.replicas[index].healthy:
            log.warning("replica %d is unavailable, out of routing: %s", index, exc.message)
        self.router.mark_down(index, exc.message)

    # ------------------------------------------------------------------ requests

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        # one replica has no choice to make: neither its prompt's prefixes nor its reply are
        # hashed (a local set never grows; a Ray engine keeps its own affinity), and remembering
        # no keys is a no-op
        routed = self.router.affinity and len(self.replicas) > 1
        keys = prefix_keys(request) if routed else []
        tried: set[int] = set()
        while True:
            index = self.router.pick(keys, frozenset(tried))
            self.router.started(index)
            stream = self.replicas[index].generate(request)
            reply: list[str] = []
            first = True
            try:
                async for delta in stream:
                    if first:  # the prompt is in this replica's cache now
                        first = False
                        self.router.remember(index, keys)
                    reply.append(delta.text)
                    yield delta
            except EngineUnavailableError as exc:
                self._failed(index, exc)
                tried.add(index)
                if not first or len(tried) >= len(self.replicas):
                    raise
                continue  # nothing was sent yet: the next replica serves it
            finally:
                self.router.finished(index)
                await stream.aclose()
            following = reply_key(request, "".join(reply)) if routed else None
            if following is not None:
                self.router.remember(index, [following])
            return

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        self._counting += 1
        tried: set[int] = set()
        try:
            while True:
                index = self.router.least_busy(frozenset(tried))
                try:
                    return await self.replicas[index].count_prompt_tokens(request)
                except EngineUnavailableError as exc:
                    self._failed(index, exc)
                    tried.add(index)
                    if len(tried) >= len(self.replicas):
                        raise
        finally:
            self._counting -= 1

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        index = self.router.least_busy()
        self.router.started(index)
        try:
            return await self.replicas[index].embed(texts)
        except EngineUnavailableError as exc:
            self._failed(index, exc)
            raise
        finally:
            self.router.finished(index)

    async def rescale(self, scaling: ReplicaScaling) -> None:
        """Rescale the engines that place their own replicas (Ray Serve)."""
        await asyncio.gather(*(r.rescale(scaling) for r in self.replicas))

    def placed_replicas(self) -> dict[str, int]:
        """Sequences each replica of an engine that places its own (Ray Serve) started, by the
        replica's name (``host:pid``), as this gateway saw them."""
        merged: dict[str, int] = {}
        for replica in self.replicas:
            served = getattr(replica, "served_by", None)
            if isinstance(served, dict):
                for name, count in served.items():
                    merged[str(name)] = merged.get(str(name), 0) + int(count)
        return merged

    def worker_pids(self) -> list[int]:
        """Process ids of replicas that run in a worker process (llama.cpp), for operators."""
        pids = []
        for replica in self.replicas:
            pid = getattr(replica, "pid", None)
            if isinstance(pid, int):
                pids.append(pid)
        return pids


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return str(message) if message else type(exc).__name__ or "failed"
