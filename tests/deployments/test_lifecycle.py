"""Idle unload, the memory budget's LRU eviction and least-busy replica routing, on fake engines."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Sequence

import pytest

from alize.deployments.lifecycle import (
    IdleReaper,
    MemoryBudget,
    MemoryBudgetExceededError,
    estimate_memory,
    held_bytes,
    resident_bytes,
)
from alize.deployments.manager import Deployment, DeploymentManager, QueueLimits
from alize.deployments.replicas import ReplicaSet
from alize.deployments.specs import DeploymentSpec
from alize.domain import Delta, Embeddings, EngineInfo, FinishReason, GenerationRequest, SamplingParams, Usage
from alize.engines.base import Engine, EngineConfig
from alize.engines.registry import EngineRegistry


class FakeEngine(Engine):
    """Counts starts and stops; ``generate`` waits on ``gate`` so a test can hold a slot."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.running = False
        self.starts = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def start(self) -> EngineInfo:
        self.running = True
        self.starts += 1
        return self.info

    async def stop(self) -> None:
        self.running = False

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(context_length=128, max_sequences=self.config.parallel)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        await self.gate.wait()
        yield Delta(text="x", tokens=1, finish_reason=FinishReason.STOP, usage=Usage(1, 1))

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return 1

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return Embeddings(vectors=tuple((1.0,) for _ in texts), prompt_tokens=len(texts))


def _manager() -> DeploymentManager:
    registry = EngineRegistry(load_entry_points=False)
    registry.register("fake", FakeEngine)
    return DeploymentManager(registry, QueueLimits(max_waiting=4, timeout_s=5))


def _spec(
    name: str, *, memory: int = 0, idle: float = 0, replicas: int = 1, parallel: int = 1
) -> DeploymentSpec:
    return DeploymentSpec(
        name=name,
        model_id="m",
        engine=EngineConfig(kind="fake", parallel=parallel),
        memory_bytes=memory,
        idle_timeout_s=idle,
        replicas=replicas,
    )


def _request() -> GenerationRequest:
    return GenerationRequest(request_id="r", params=SamplingParams(max_tokens=1), prompt="hi")


def _age(*deployments: Deployment, seconds: float = 120) -> None:
    """Pretend the deployments were last used ``seconds`` ago (no sleeping past a timeout)."""
    for d in deployments:
        d.last_used = time.monotonic() - seconds


async def test_idle_deployment_is_unloaded_and_reloads_with_a_cold_start() -> None:
    manager = _manager()
    deployment = manager.add(_spec("a", idle=60))
    keep = manager.add(_spec("keep", idle=0))
    pinned = manager.add(_spec("pinned", idle=60))
    for d in (deployment, keep, pinned):
        await d.ensure_loaded()
    reaper = IdleReaper(manager, pinned=lambda: {"pinned"})
    _age(deployment, pinned, keep, seconds=59)
    assert await reaper.reap_once() == []  # not idle long enough yet
    _age(deployment, pinned, keep, seconds=61)
    assert await reaper.reap_once() == ["a"]
    engine = deployment.engine.replicas[0]
    assert isinstance(engine, FakeEngine)
    assert not deployment.loaded and not engine.running
    assert keep.loaded and pinned.loaded
    _, cold = await deployment.ensure_loaded()
    assert cold is not None and engine.starts == 2


async def test_a_busy_deployment_is_never_reaped() -> None:
    manager = _manager()
    deployment = manager.add(_spec("a", idle=60))
    await deployment.ensure_loaded()
    lease = await deployment.admit("c")
    _age(deployment)
    reaper = IdleReaper(manager)
    assert await reaper.reap_once() == []
    lease.release()
    _age(deployment)
    assert await reaper.reap_once() == ["a"]


async def test_a_request_between_loading_and_its_slot_is_not_cut_off() -> None:
    """The gap between ensure_loaded and admit (prompt counting, limits, budget) may outlast a
    short idle timeout; the reaper must not unload the engine under the request."""
    manager = _manager()
    deployment = manager.add(_spec("a", idle=60))
    reaper = IdleReaper(manager)
    hold = deployment.hold()
    await deployment.ensure_loaded()
    _age(deployment)  # longer than the idle timeout
    assert await reaper.reap_once() == []
    lease = await deployment.admit("c")
    hold.release()
    hold.release()  # idempotent: a second release must not let go of another request's hold
    assert deployment.loaded
    lease.release()
    _age(deployment)
    assert await reaper.reap_once() == ["a"]


async def test_background_reaper_runs_and_stops() -> None:
    manager = _manager()
    deployment = manager.add(_spec("a", idle=0.05))
    await deployment.ensure_loaded()
    reaper = IdleReaper(manager, interval_s=0.02)
    reaper.start()
    for _ in range(250):  # up to 5 s on a loaded machine
        if not deployment.loaded:
            break
        await asyncio.sleep(0.02)
    await reaper.stop()
    assert not deployment.loaded


async def test_memory_budget_evicts_least_recently_used_idle_deployment() -> None:
    manager = _manager()
    budget = MemoryBudget(manager, limit_bytes=250)
    manager.before_load = budget.make_room
    a, b, c = (manager.add(_spec(n, memory=100)) for n in ("a", "b", "c"))
    await a.ensure_loaded()
    await b.ensure_loaded()
    a.last_used = time.monotonic() + 10  # a was used after b
    await c.ensure_loaded()
    assert (a.loaded, b.loaded, c.loaded) == (True, False, True)
    assert budget.evictions == 1 and budget.used_bytes() == 200


async def test_memory_budget_refuses_when_everything_is_busy_or_pinned() -> None:
    manager = _manager()
    budget = MemoryBudget(manager, limit_bytes=150, pinned=lambda: {"pinned"})
    manager.before_load = budget.make_room
    pinned = manager.add(_spec("pinned", memory=100))
    other = manager.add(_spec("other", memory=100))
    huge = manager.add(_spec("huge", memory=1000))
    await pinned.ensure_loaded()
    with pytest.raises(MemoryBudgetExceededError, match="busy or pinned"):
        await other.ensure_loaded()
    with pytest.raises(MemoryBudgetExceededError, match="more than the whole memory budget"):
        await huge.ensure_loaded()
    assert pinned.loaded and not other.loaded


async def test_replicas_route_to_the_least_busy_and_share_the_queue() -> None:
    manager = _manager()
    deployment = manager.add(_spec("r", replicas=2, parallel=1))
    info, _ = await deployment.ensure_loaded()
    assert info.max_sequences == 2 and deployment.queue.slots == 2
    engine = deployment.engine
    first = engine.replicas[0]
    assert isinstance(first, FakeEngine)
    first.gate.clear()  # replica 0 holds its sequence
    held = engine.generate(_request())
    pending = asyncio.ensure_future(held.__anext__())
    for _ in range(1000):  # until the held sequence is on its replica (an event, not a delay)
        if engine.in_flight != [0, 0]:
            break
        await asyncio.sleep(0)
    assert engine.in_flight == [1, 0]
    async for _ in engine.generate(_request()):
        pass
    assert engine.served == [1, 1]  # the second went to the idle replica
    first.gate.set()
    await pending
    await held.aclose()
    assert engine.in_flight == [0, 0]


async def test_replica_set_stops_everything_if_one_replica_fails_to_start() -> None:
    class Broken(FakeEngine):
        async def start(self) -> EngineInfo:
            raise RuntimeError("no")

    good = FakeEngine(EngineConfig(kind="fake"))
    replicas = ReplicaSet([good, Broken(EngineConfig(kind="fake"))])
    with pytest.raises(RuntimeError):
        await replicas.start()
    assert not good.running


def test_memory_estimate_grows_with_slots_context_and_replicas() -> None:
    small = EngineConfig(kind="llamacpp", parallel=1, ctx_per_slot=1024, cache_ram_mib=0)
    base = estimate_memory(small, size_bytes=100_000_000, parameter_count=135_000_000, replicas=1)
    assert base > 100_000_000
    more_slots = EngineConfig(kind="llamacpp", parallel=4, ctx_per_slot=1024, cache_ram_mib=0)
    assert estimate_memory(more_slots, size_bytes=100_000_000, parameter_count=135_000_000, replicas=1) > base
    assert estimate_memory(small, size_bytes=100_000_000, parameter_count=135_000_000, replicas=2) == 2 * base
    assert (
        estimate_memory(EngineConfig(kind="remote"), size_bytes=None, parameter_count=None, replicas=3) == 0
    )


class WorkerProcessEngine(FakeEngine):
    """Looks like an engine with a worker process: this test process stands in for it."""

    @property
    def pid(self) -> int:
        return os.getpid()


async def test_the_budget_counts_the_resident_memory_of_worker_processes() -> None:
    registry = EngineRegistry(load_entry_points=False)
    registry.register("fake", FakeEngine)
    registry.register("worker", WorkerProcessEngine)
    manager = DeploymentManager(registry, QueueLimits(max_waiting=4, timeout_s=5))
    rss = resident_bytes([os.getpid()])
    assert rss is not None and rss > 10 * 1024 * 1024
    assert resident_bytes([2**22 + 7]) is None  # no such process: nothing measured
    worker = manager.add(
        DeploymentSpec(name="w", model_id="m", engine=EngineConfig(kind="worker"), memory_bytes=1000)
    )
    in_process = manager.add(_spec("p", memory=1000))
    # a budget that fits both estimates (2000 bytes) but not the worker's real footprint
    budget = MemoryBudget(manager, limit_bytes=rss // 2)
    manager.before_load = budget.make_room
    await worker.ensure_loaded()  # its estimate fits...
    assert held_bytes(worker) >= rss * 0.8 and budget.used_bytes() >= rss * 0.8  # ...its real size does not
    await in_process.ensure_loaded()  # with estimates alone both would stay; measured, one must go
    assert not worker.loaded and in_process.loaded and budget.evictions == 1
    assert budget.used_bytes() == 1000 == held_bytes(in_process)  # in-process engines keep their estimate
    assert held_bytes(worker) == 1000  # unloaded: back to the planning figure
