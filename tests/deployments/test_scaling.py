"""Deployments on a Ray cluster, without one: with a cluster set, llama.cpp deployments get the
Ray engine with their replica count or autoscaling bounds (one engine that places its own
replicas, a fair queue sized for the most replicas), and the bounds change live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.deployments.test_replicas import Replica
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

from alize.catalog.service import CatalogService
from alize.config import EngineSettings, RaySettings, Settings
from alize.deployments.manager import DeploymentManager, QueueLimits
from alize.deployments.service import DeploymentService
from alize.deployments.specs import (
    SCALING_FIELDS,
    UPDATABLE_FIELDS,
    DeploymentSpec,
    engine_config,
    engine_kind,
    parse_deployment,
)
from alize.engines.base import ReplicaScaling
from alize.engines.registry import EngineRegistry
from alize.errors import ValidationFailedError
from alize.store.testing import temporary_database

RAY = RaySettings(address="127.0.0.1:6379", num_cpus_per_replica=2)
DEFAULTS = EngineSettings(parallel=4, ctx_per_slot=1024, threads=2)
INSTALLED = ("llamacpp", "ray", "remote")


def test_a_cluster_puts_llamacpp_deployments_on_ray_and_leaves_the_others() -> None:
    config = parse_deployment({"name": "chat", "model": "m", "replicas": 3})
    assert engine_kind(config, None, INSTALLED) == "llamacpp"
    assert engine_kind(config, None, INSTALLED, ray=RaySettings()) == "llamacpp"  # no address
    assert engine_kind(config, None, INSTALLED, ray=RAY) == "ray"
    assert engine_kind(config, None, INSTALLED, "remote", ray=RAY) == "remote"
    engine = engine_config(config, None, kind="ray", path=Path("/m.gguf"), defaults=DEFAULTS, ray=RAY)
    assert engine.scaling == ReplicaScaling(replicas=3)
    assert engine.options["address"] == "127.0.0.1:6379" and engine.options["application"] == "chat"
    assert engine.options["num_cpus"] == "2.0"
    local = engine_config(config, None, kind="llamacpp", path=Path("/m.gguf"), defaults=DEFAULTS, ray=RAY)
    assert local.scaling is None and local.options == {}


def test_autoscaling_bounds_are_checked_and_updatable() -> None:
    config = parse_deployment(
        {"name": "chat", "model": "m", "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2}
    )
    engine = engine_config(config, None, kind="ray", path=Path("/m.gguf"), defaults=DEFAULTS, ray=RAY)
    assert engine.scaling == ReplicaScaling(1, 1, 4, 2.0) and engine.scaling.most == 4
    with pytest.raises(ValidationFailedError, match="min_replicas is more than max_replicas"):
        parse_deployment({"name": "c", "model": "m", "min_replicas": 5, "max_replicas": 4})
    with pytest.raises(ValidationFailedError, match="need max_replicas"):
        parse_deployment({"name": "c", "model": "m", "min_replicas": 1})
    assert SCALING_FIELDS <= UPDATABLE_FIELDS


@pytest_asyncio.fixture
async def manager() -> AsyncIterator[DeploymentManager]:
    registry = EngineRegistry(load_entry_points=False)
    registry.register("ray", Replica)
    manager = DeploymentManager(registry, QueueLimits(max_waiting=4, timeout_s=2))
    try:
        yield manager
    finally:
        await manager.close()


def _spec(**fields: object) -> DeploymentSpec:
    config = parse_deployment({"name": "chat", "model": "m", **fields})
    engine = engine_config(config, None, kind="ray", path=Path("echo"), defaults=DEFAULTS, ray=RAY)
    return DeploymentSpec(name="chat", model_id="m", engine=engine, replicas=config.replicas)


async def test_one_engine_places_the_replicas_and_rescales_live(manager: DeploymentManager) -> None:
    deployment = manager.add(_spec(replicas=2))
    assert len(deployment.engine.replicas) == 1  # Serve runs the 2 replicas
    assert deployment.queue.slots == 8  # parallel 4 x 2 replicas
    await deployment.ensure_loaded()
    engine = deployment.engine
    assert await manager.rescale(_spec(replicas=2, min_replicas=1, max_replicas=5)) is deployment
    assert deployment.engine is engine and deployment.loaded  # no reload
    assert deployment.queue.slots == 20
    replica = engine.replicas[0]
    assert isinstance(replica, Replica) and replica.rescaled == [ReplicaScaling(2, 1, 5, None)]
    with pytest.raises(ValueError, match="use replace"):  # another engine setting needs a reload
        manager.retune(_spec(replicas=2, parallel=8))


async def test_patching_the_bounds_of_a_ray_deployment_rescales_it_without_a_reload(tmp_path: Path) -> None:
    async with temporary_database("sqlite", tmp_path) as db:
        catalog = CatalogService(db)
        await catalog.add_path(str(write_tiny_llama_gguf(tmp_path / "tiny.gguf")))
        registry = EngineRegistry(load_entry_points=False)
        registry.register("ray", Replica)
        manager = DeploymentManager(registry, QueueLimits(max_waiting=2, timeout_s=1))
        settings = Settings(data_dir=tmp_path, deployments=[], ray=RAY)
        service = DeploymentService(db, manager, catalog, settings)
        try:
            created = await service.create({"name": "t", "model": "tiny", "parallel": 2, "replicas": 2})
            assert created.spec.engine.kind == "ray" and created.spec.memory_bytes == 0
            await created.ensure_loaded()
            engine = created.engine
            scaled = await service.update("t", {"min_replicas": 1, "max_replicas": 6})
            assert scaled is created and created.loaded and created.engine is engine  # no reload
            assert created.queue.slots == 12 and service.config_of("t").max_replicas == 6
            replica = engine.replicas[0]
            assert isinstance(replica, Replica) and replica.rescaled == [ReplicaScaling(2, 1, 6, None)]
            assert created.spec.card is not None and created.spec.card["deployment"]["max_replicas"] == 6
            reloaded = await service.update("t", {"max_replicas": 3, "parallel": 4})
            assert reloaded is not created and not created.loaded  # an engine setting: replaced
        finally:
            await manager.close()
