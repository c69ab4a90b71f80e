"""Quick start over scripted engines: a cold start is answered by a small engine, the full one
takes over once started, the small one retires after its requests; an unload in the middle of
the upgrade stops everything it had started; cold starts are remembered for /v1/models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest_asyncio
from tests.support.scripted_engine import ScriptedEngine

from alize.deployments.manager import Deployment, DeploymentManager, QueueLimits
from alize.deployments.specs import DeploymentSpec
from alize.domain import EngineInfo
from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry


class GatedEngine(ScriptedEngine):
    """A scripted engine whose full-size instances wait for ``gate`` before they are started."""

    gate: asyncio.Event
    instances: list[GatedEngine]

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.running = False
        GatedEngine.instances.append(self)

    async def start(self) -> EngineInfo:
        if self.config.parallel > 2:
            await GatedEngine.gate.wait()
        self.running = True
        return await super().start()

    async def stop(self) -> None:
        self.running = False
        await super().stop()


@pytest_asyncio.fixture
async def manager() -> AsyncIterator[DeploymentManager]:
    GatedEngine.gate = asyncio.Event()
    GatedEngine.instances = []
    registry = EngineRegistry(load_entry_points=False)
    registry.register("scripted", GatedEngine)
    manager = DeploymentManager(registry, QueueLimits(max_waiting=4, timeout_s=2))
    try:
        yield manager
    finally:
        GatedEngine.gate.set()
        await manager.close()


def _add(manager: DeploymentManager, quick: int) -> Deployment:
    config = EngineConfig(kind="scripted", model_path=Path("echo"), parallel=8, ctx_per_slot=64)
    return manager.add(DeploymentSpec(name="echo", model_id="m", engine=config, quick_start_slots=quick))


def _sizes(engines: list[GatedEngine]) -> list[int]:
    return sorted(e.config.parallel for e in engines if e.running)


async def _until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110  (the swap happens in a task of its own)
            await asyncio.sleep(0.01)


async def test_a_cold_start_is_served_by_the_small_engine_until_the_full_one_is_ready(
    manager: DeploymentManager,
) -> None:
    echo = _add(manager, quick=2)
    full = echo.engine
    info, cold = await echo.ensure_loaded()
    assert cold is not None and info.max_sequences == 2  # the full engine is still loading
    assert echo.engine is not full and _sizes(GatedEngine.instances) == [2]
    lease = await echo.admit("client")  # a request on the small engine while the swap happens
    GatedEngine.gate.set()
    await _until(lambda: echo.engine is full)
    assert _sizes(GatedEngine.instances) == [2, 8]  # the small one waits for the lease
    lease.release()
    await _until(lambda: _sizes(GatedEngine.instances) == [8])
    assert echo.cold_starts.summary() is not None and echo.cold_starts.summary()["loads"] == 1


async def test_an_unload_during_the_upgrade_stops_both_and_the_next_load_starts_over(
    manager: DeploymentManager,
) -> None:
    echo = _add(manager, quick=2)
    full = echo.engine
    await echo.ensure_loaded()
    await echo.unload()
    assert _sizes(GatedEngine.instances) == [] and echo.engine is full and not echo.loaded
    GatedEngine.gate.set()
    await asyncio.sleep(0.05)
    assert _sizes(GatedEngine.instances) == []  # the cancelled upgrade started nothing late
    await echo.ensure_loaded()
    await _until(lambda: echo.engine is full and _sizes(GatedEngine.instances) == [8])
    summary = echo.cold_starts.summary()
    assert summary is not None and summary["loads"] == 2


async def test_without_quick_slots_the_full_engine_loads_first(manager: DeploymentManager) -> None:
    GatedEngine.gate.set()
    echo = _add(manager, quick=0)
    full = echo.engine
    info, _ = await echo.ensure_loaded()
    assert info.max_sequences == 8 and echo.engine is full
    assert len(GatedEngine.instances) == 1
