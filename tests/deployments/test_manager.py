"""The deployment manager over scripted engines: add and look up, load once on first use (cold
start reported once), holds keep a deployment busy, replace and retune, remove and close."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.support.scripted_engine import ScriptedEngine

from alize.deployments.manager import Deployment, DeploymentManager, QueueLimits
from alize.deployments.specs import DeploymentSpec, Prices
from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry
from alize.errors import ConflictError, InvalidRequestError, ModelNotFoundError


def _spec(name: str, *, parallel: int = 2, replicas: int = 1, kind: str = "scripted") -> DeploymentSpec:
    config = EngineConfig(kind=kind, model_path=Path("echo"), parallel=parallel, ctx_per_slot=64)
    return DeploymentSpec(name=name, model_id=f"{name}-model", engine=config, replicas=replicas)


@pytest_asyncio.fixture
async def manager() -> AsyncIterator[DeploymentManager]:
    registry = EngineRegistry(load_entry_points=False)
    registry.register("scripted", ScriptedEngine)
    manager = DeploymentManager(registry, QueueLimits(max_waiting=4, timeout_s=2))
    try:
        yield manager
    finally:
        await manager.close()


def _engines(deployment: Deployment) -> list[ScriptedEngine]:
    return [e for e in deployment.engine.replicas if isinstance(e, ScriptedEngine)]


async def test_add_get_list_and_unknown_names(manager: DeploymentManager) -> None:
    manager.add(_spec("b"))
    manager.add(_spec("a", replicas=3, parallel=2))
    assert [d.name for d in manager.list()] == ["a", "b"]
    assert manager.get("a").queue.slots == 6  # slots of every replica share one fair queue
    assert len(_engines(manager.get("a"))) == 3
    with pytest.raises(ConflictError):
        manager.add(_spec("a"))
    with pytest.raises(ModelNotFoundError):
        manager.get("nope")
    assert manager.find("nope") is None


async def test_loads_once_under_concurrent_first_requests(manager: DeploymentManager) -> None:
    made_room: list[str] = []

    async def before_load(deployment: Deployment) -> None:
        made_room.append(deployment.name)

    manager.before_load = before_load
    echo = manager.add(_spec("echo"))
    results = await asyncio.gather(*(echo.ensure_loaded() for _ in range(5)))
    colds = [cold for _, cold in results]
    assert sum(c is not None for c in colds) == 1  # one caller paid the cold start
    assert echo.loads == 1 and _engines(echo)[0].started == 1 and made_room == ["echo"]
    await echo.unload()
    assert not echo.loaded
    _, cold = await echo.ensure_loaded()
    assert cold is not None and echo.loads == 2


async def test_holds_and_slots_make_a_deployment_busy(manager: DeploymentManager) -> None:
    echo = manager.add(_spec("echo"))
    assert not echo.busy
    hold = echo.hold()
    assert echo.busy
    hold.release()
    hold.release()  # idempotent: a second release does not free someone else's hold
    other = echo.hold()
    assert echo.busy
    other.release()
    lease = await echo.admit("c")
    assert echo.busy
    lease.release()
    assert not echo.busy


async def test_retune_swaps_live_settings_and_refuses_engine_changes(manager: DeploymentManager) -> None:
    echo = manager.add(_spec("echo"))
    await echo.ensure_loaded()
    engine = echo.engine
    priced = dataclasses.replace(echo.spec, prices=Prices(input_per_million=5))
    assert manager.retune(priced) is echo
    assert echo.loaded and echo.engine is engine and echo.spec.prices.input_per_million == 5
    with pytest.raises(ValueError, match="replace"):
        manager.retune(_spec("echo", parallel=3))


async def test_replace_unloads_the_old_engines_and_keeps_them_on_failure(manager: DeploymentManager) -> None:
    echo = manager.add(_spec("echo"))
    await echo.ensure_loaded()
    new = await manager.replace(_spec("echo", parallel=3))
    assert new is not echo and not echo.loaded and not new.loaded
    assert manager.get("echo") is new and new.queue.slots == 3
    with pytest.raises(InvalidRequestError, match="unknown engine kind"):
        await manager.replace(_spec("echo", kind="missing"))
    assert manager.get("echo") is new  # the old one is put back


async def test_remove_and_close_unload(manager: DeploymentManager) -> None:
    a, b = manager.add(_spec("a")), manager.add(_spec("b"))
    await a.ensure_loaded()
    await b.ensure_loaded()
    await manager.remove("a")
    assert not a.loaded and [d.name for d in manager.list()] == ["b"]
    with pytest.raises(ModelNotFoundError):
        await manager.remove("a")
    await manager.close()
    assert not b.loaded and manager.list() == []
