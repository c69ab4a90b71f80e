"""The catalog service on a real (SQLite) database: built-ins seeded, models added from files,
editable fields changed, malformed files refused, and the deployment service persisting deployments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.fixtures.tiny_gguf import write_malformed_gguf, write_tiny_llama_gguf

from alize.catalog.cards import GGUFFileSource
from alize.catalog.service import CatalogService, ModelNotInCatalogError
from alize.config import DeploymentSettings, Settings
from alize.deployments.manager import DeploymentManager, QueueLimits
from alize.deployments.service import DeploymentService
from alize.engines.registry import EngineRegistry
from alize.errors import ConflictError, InvalidRequestError, ModelNotFoundError, ValidationFailedError
from alize.store import Database
from alize.store.testing import temporary_database


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database("sqlite", tmp_path) as database:
        yield database


async def test_builtins_are_seeded_and_keep_operator_edits(db: Database) -> None:
    catalog = CatalogService(db)
    await catalog.seed_builtins()
    cards = {c.id: c for c in await catalog.list()}
    assert list(cards) == ["smollm2-135m-instruct", "gemma3-270m", "all-minilm-l6-v2"]
    assert cards["all-minilm-l6-v2"].tasks == ("embeddings",)
    assert cards["all-minilm-l6-v2"].embedding_dimensions == 384
    assert cards["smollm2-135m-instruct"].engine == "llamacpp"
    await catalog.update("gemma3-270m", {"price_input_per_million": 7, "description": "mine"})
    await catalog.seed_builtins()  # a restart must not undo the operator's prices
    gemma = await catalog.get("gemma3-270m")
    assert (gemma.price_input_per_million, gemma.description) == (7, "mine")


async def test_add_a_gguf_file_then_update_and_delete_it(db: Database, tmp_path: Path) -> None:
    catalog = CatalogService(db)
    path = write_tiny_llama_gguf(tmp_path / "Tiny-Model.gguf")
    card = await catalog.add_path(str(path))
    assert card.id == "tiny-model" and card.tasks == ("chat", "completion")
    assert card.context_length == 256 and card.source.kind == "gguf"
    with pytest.raises(ConflictError):
        await catalog.add_path(str(path))
    renamed = await catalog.add_path(str(path), "tiny-two")
    assert renamed.id == "tiny-two"
    with pytest.raises(ValidationFailedError, match="context_length"):
        await catalog.update("tiny-model", {"context_length": 10})
    with pytest.raises(ValidationFailedError, match="price_input_per_million"):
        await catalog.update("tiny-model", {"price_input_per_million": -1})
    await catalog.delete("tiny-model")
    with pytest.raises(ModelNotInCatalogError):
        await catalog.get("tiny-model")
    assert [c.id for c in await catalog.list()] == ["tiny-two"]


@pytest.mark.parametrize("kind", ["truncated", "wrong_magic", "absurd_tensor_count"])
async def test_malformed_gguf_is_refused_with_a_clear_error(db: Database, tmp_path: Path, kind: str) -> None:
    catalog = CatalogService(db)
    path = write_malformed_gguf(tmp_path / f"{kind}.gguf", kind)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError) as caught:
        await catalog.add_path(str(path))
    assert caught.value.code == "invalid_model_file"
    assert caught.value.message
    assert await catalog.list() == []


async def test_paths_must_be_absolute_and_exist(db: Database, tmp_path: Path) -> None:
    catalog = CatalogService(db)
    with pytest.raises(InvalidRequestError, match="absolute"):
        await catalog.add_path("relative.gguf")
    with pytest.raises(InvalidRequestError, match="does not exist"):
        await catalog.add_path(str(tmp_path / "missing.gguf"))


async def test_a_remote_card_deploys_on_the_remote_engine_and_only_with_it(
    db: Database, tmp_path: Path
) -> None:
    catalog = CatalogService(db)
    await catalog.add_card(
        {
            "id": "upstream-chat",
            "display_name": "Upstream",
            "publisher": "someone",
            "license": "proprietary",
            "open_weights": False,
            "tasks": ["chat"],
            "context_length": 8192,
            "has_chat_template": True,
            "source": {"kind": "remote", "base_url": "https://api.example.com/v1", "upstream_model": "x"},
        }
    )
    settings = Settings(data_dir=tmp_path, deployments=[])
    registry = EngineRegistry(load_entry_points=False)
    manager = DeploymentManager(registry, QueueLimits(max_waiting=1, timeout_s=1))
    service = DeploymentService(db, manager, catalog, settings)
    with pytest.raises(InvalidRequestError) as caught:
        await service.create({"name": "up", "model": "upstream-chat"})
    assert caught.value.code == "engine_not_installed"
    manager = DeploymentManager(EngineRegistry(), QueueLimits(max_waiting=1, timeout_s=1))
    service = DeploymentService(db, manager, catalog, settings)
    deployment = await service.create({"name": "up", "model": "upstream-chat"})
    engine = deployment.spec.engine
    assert engine.kind == "remote" and engine.model_path is None and deployment.spec.memory_bytes == 0
    assert engine.options == {
        "base_url": "https://api.example.com/v1",
        "upstream_model": "x",
        "tasks": "chat",
        "supports_tools": "false",
    }
    assert deployment.loaded is False  # nothing is contacted before the first request


async def test_deployments_are_persisted_restored_and_protect_their_model(
    db: Database, tmp_path: Path
) -> None:
    catalog = CatalogService(db)
    await catalog.seed_builtins()
    await catalog.add_path(str(write_tiny_llama_gguf(tmp_path / "tiny.gguf")))
    settings = Settings(data_dir=tmp_path, deployments=[DeploymentSettings(name="smollm2-135m-instruct")])

    def fresh() -> tuple[DeploymentManager, DeploymentService]:
        manager = DeploymentManager(EngineRegistry(), QueueLimits(max_waiting=1, timeout_s=1))
        return manager, DeploymentService(db, manager, catalog, settings)

    manager, service = fresh()
    await service.restore()
    assert [d.name for d in manager.list()] == ["smollm2-135m-instruct"]
    default = manager.get("smollm2-135m-instruct")
    assert default.spec.declared and default.spec.card is not None
    assert default.spec.card["price_input_per_million"] == 10_000
    created = await service.create(
        {"name": "tiny-a", "model": "tiny", "parallel": 2, "idle_timeout_s": 5, "price_input_per_million": 3}
    )
    assert created.spec.engine.ctx_per_slot == 256  # capped at the model's own context
    assert created.spec.card is not None and created.spec.card["price_input_per_million"] == 3
    assert created.spec.memory_bytes > 0
    with pytest.raises(ConflictError):
        await service.create({"name": "tiny-a", "model": "tiny"})
    with pytest.raises(ValidationFailedError, match="replicas"):
        await service.create({"name": "tiny-b", "model": "tiny", "replicas": 0})
    with pytest.raises(ModelNotInCatalogError):
        await service.create({"name": "tiny-c", "model": "nope"})
    with pytest.raises(ConflictError, match="declared"):
        await service.delete("smollm2-135m-instruct")
    with pytest.raises(ConflictError, match="undeploy"):
        await service.delete_model("tiny")
    updated = await service.update("tiny-a", {"replicas": 2})
    assert len(updated.engine.replicas) == 2
    with pytest.raises(ValidationFailedError, match="model"):
        await service.update("tiny-a", {"model": "smollm2-135m-instruct"})

    manager2, service2 = fresh()  # a restart
    await service2.restore()
    restored = manager2.get("tiny-a")
    assert restored.spec.replicas == 2 and restored.spec.idle_timeout_s == 5
    assert restored.spec.prices.input_per_million == 3
    await service2.delete("tiny-a")
    with pytest.raises(ModelNotFoundError):
        manager2.get("tiny-a")
    await service2.delete_model("tiny")
    manager3, service3 = fresh()
    await service3.restore()
    assert [d.name for d in manager3.list()] == ["smollm2-135m-instruct"]


async def test_a_builtin_pulled_as_a_pack_replaces_its_card_until_removed(
    db: Database, tmp_path: Path
) -> None:
    """Where a built-in's package is missing, the pulled copy's card is the live one: re-seeding
    at the next start keeps it, and deleting it removes the pack's files."""
    models = tmp_path / "models"
    catalog = CatalogService(db, models_dir=models)
    await catalog.seed_builtins()
    builtin = await catalog.get("smollm2-135m-instruct")
    await catalog.update("smollm2-135m-instruct", {"price_input_per_million": 7})
    (models / "smollm2-135m-instruct").mkdir(parents=True)
    path = write_tiny_llama_gguf(models / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    pulled = builtin.model_copy(update={"source": GGUFFileSource(path=str(path)), "description": "pulled"})
    stored = await catalog.register_pulled(pulled)
    assert stored.source.kind == "gguf" and stored.price_input_per_million == 7  # the edit is kept

    await catalog.seed_builtins()  # the next start
    assert (await catalog.get("smollm2-135m-instruct")).source == GGUFFileSource(path=str(path))

    other = pulled.model_copy(update={"id": "taken"})
    await catalog.add(other.model_copy(update={"source": GGUFFileSource(path=str(tmp_path / "x.gguf"))}))
    with pytest.raises(ConflictError, match="did not come from this pack"):
        await catalog.register_pulled(other)

    await catalog.delete("smollm2-135m-instruct")
    assert not path.parent.exists()
    await catalog.seed_builtins()
    assert (await catalog.get("smollm2-135m-instruct")).source.kind == "packaged"
