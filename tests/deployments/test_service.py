"""The deployment service: the database says what should be live, the manager holds what is.
Live settings (prices, description, filters) change in place without a reload; engine settings
replace the deployment; declared deployments are the settings' own; a stored deployment that
cannot be restored is skipped without stopping the others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.support.scripted_engine import ScriptedEngine

from alize.catalog.service import CatalogService
from alize.config import DeploymentSettings, RaySettings, Settings
from alize.deployments.manager import DeploymentManager, QueueLimits
from alize.deployments.service import DeploymentService
from alize.engines.registry import EngineRegistry
from alize.errors import (
    ConflictError,
    InvalidRequestError,
    ModelNotFoundError,
    UnsupportedFeatureError,
    ValidationFailedError,
)
from alize.store import Database
from alize.store.repositories import DeploymentRepository
from alize.store.testing import temporary_database


@dataclass
class Rig:
    db: Database
    catalog: CatalogService
    settings: Settings

    def fresh(self) -> tuple[DeploymentManager, DeploymentService]:
        """A manager and service as a (re)started server builds them; llama.cpp is scripted."""
        registry = EngineRegistry(load_entry_points=False)
        registry.register("llamacpp", ScriptedEngine)
        registry.register("scripted", ScriptedEngine)
        manager = DeploymentManager(registry, QueueLimits(max_waiting=2, timeout_s=1))
        return manager, DeploymentService(self.db, manager, self.catalog, self.settings)


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with temporary_database("sqlite", tmp_path) as db:
        catalog = CatalogService(db)
        await catalog.add_path(str(write_tiny_llama_gguf(tmp_path / "tiny.gguf")))
        declared = DeploymentSettings(name="fixed", engine="scripted", model_path=Path("echo"))
        yield Rig(db, catalog, Settings(data_dir=tmp_path, deployments=[declared]))


async def test_live_settings_change_in_place_and_engine_settings_replace(rig: Rig) -> None:
    manager, service = rig.fresh()
    created = await service.create({"name": "t", "model": "tiny", "parallel": 2})
    await created.ensure_loaded()
    engine = created.engine
    priced = await service.update("t", {"price_input_per_million": 9, "description": "cheap"})
    assert priced is created and created.loaded and created.engine is engine  # no reload
    assert created.spec.prices.input_per_million == 9
    assert created.spec.card is not None and created.spec.card["price_input_per_million"] == 9
    wider = await service.update("t", {"parallel": 3})
    assert wider is not created and not created.loaded  # the old engines stopped
    assert wider.queue.slots == 3 and wider.spec.prices.input_per_million == 9  # earlier change kept
    assert service.config_of("t").parallel == 3
    with pytest.raises(ValidationFailedError, match="cannot be changed: model"):
        await service.update("t", {"model": "tiny"})
    await manager.close()


async def test_what_is_refused(rig: Rig) -> None:
    manager, service = rig.fresh()
    await service.restore()
    with pytest.raises(ConflictError, match="declared"):
        await service.update("fixed", {"description": "x"})
    with pytest.raises(ConflictError, match="declared"):
        await service.delete("fixed")
    with pytest.raises(ConflictError, match="already exists"):
        await service.create({"name": "fixed", "model": "tiny"})
    with pytest.raises(InvalidRequestError) as err:
        await service.create({"name": "big", "model": "tiny", "ctx_per_slot": 4096})
    assert err.value.param == "ctx_per_slot"  # the tiny model has 256
    with pytest.raises(ModelNotFoundError):
        service.config_of("nope")
    await service.create({"name": "t", "model": "tiny"})
    with pytest.raises(ConflictError, match="undeploy it first"):
        await service.delete_model("tiny")
    await manager.close()


async def test_restore_brings_back_what_was_stored_and_skips_what_cannot_be(rig: Rig) -> None:
    manager, service = rig.fresh()
    await service.restore()
    await service.create(
        {"name": "kept", "model": "tiny", "idle_timeout_s": 7, "price_output_per_million": 4}
    )
    await service.create({"name": "gone", "model": "tiny"})
    await service.delete("gone")
    async with rig.db.transaction() as session:
        repo = DeploymentRepository(session)
        now = datetime.now(UTC)
        await repo.upsert("broken", "not-in-catalog", {}, now)
        await repo.upsert("fixed", "tiny", {}, now)  # shadowed by the declared one
    await manager.close()

    manager, service = rig.fresh()  # a restart
    await service.restore()
    assert [d.name for d in manager.list()] == ["fixed", "kept"]
    fixed, kept = manager.get("fixed"), manager.get("kept")
    assert fixed.spec.declared and fixed.spec.engine.kind == "scripted"
    assert not kept.spec.declared and kept.spec.idle_timeout_s == 7
    assert kept.spec.prices.output_per_million == 4 and not kept.loaded  # nothing loads at restore
    await manager.close()


async def test_a_fine_tuned_model_of_a_base_on_ray_is_refused_at_deployment(rig: Rig, tmp_path: Path) -> None:
    """Ray replicas load no LoRA adapters: deploying a fine-tuned model whose base runs on the
    Ray cluster is a 400 that says so (it was a 409 saying the base was not deployed)."""
    registry = EngineRegistry(load_entry_points=False)
    registry.register("ray", ScriptedEngine)  # what `alize serve --ray` makes of llama.cpp
    manager = DeploymentManager(registry, QueueLimits(max_waiting=2, timeout_s=1))
    settings = rig.settings.model_copy(update={"ray": RaySettings(address="127.0.0.1:6379")})
    service = DeploymentService(rig.db, manager, rig.catalog, settings)
    base = await service.create({"name": "base", "model": "tiny"})
    assert base.spec.engine.kind == "ray"
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(b"GGUF")
    await rig.catalog.add_card(
        {
            "id": "ft:tiny:x:1",
            "display_name": "ft:tiny:x:1",
            "publisher": "tests",
            "license": "apache-2.0",
            "open_weights": True,
            "tasks": ["chat"],
            "context_length": 256,
            "architecture": "llama",
            "has_chat_template": True,
            "source": {"kind": "adapter", "base": "tiny", "path": str(adapter)},
        }
    )
    with pytest.raises(UnsupportedFeatureError, match="'tiny' runs on the Ray cluster \\(base\\)") as refused:
        await service.create({"name": "ft", "model": "ft:tiny:x:1"})
    assert refused.value.status_code == 400 and refused.value.param == "model"
    assert manager.find("ft") is None
    await manager.close()
