"""The benchmark on a real engine (a tiny GGUF on llama.cpp): figures measured, stored on the card,
kept across a re-seed, and shown by the deployments serving the model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

from alize.catalog.service import CatalogService
from alize.config import Settings
from alize.deployments.benchmark import KERNEL_FLAGS, BenchmarkPlan, cpu_flags, describe_machine
from alize.deployments.manager import DeploymentManager, QueueLimits
from alize.deployments.service import DeploymentService
from alize.engines.registry import EngineRegistry
from alize.errors import InvalidRequestError
from alize.store import Database
from alize.store.testing import temporary_database

pytestmark = pytest.mark.timeout(120)


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database("sqlite", tmp_path) as database:
        yield database


@pytest_asyncio.fixture
async def services(db: Database, tmp_path: Path) -> AsyncIterator[tuple[CatalogService, DeploymentService]]:
    catalog = CatalogService(db)
    await catalog.add_path(str(write_tiny_llama_gguf(tmp_path / "tiny.gguf")))
    settings = Settings(data_dir=tmp_path, deployments=[])
    settings.engine.threads = 1
    manager = DeploymentManager(EngineRegistry(), QueueLimits(max_waiting=4, timeout_s=30))
    yield catalog, DeploymentService(db, manager, catalog, settings)
    await manager.close()


async def test_an_undeployed_model_is_loaded_measured_and_unloaded(
    services: tuple[CatalogService, DeploymentService],
) -> None:
    catalog, deployments = services
    card = await deployments.benchmark("tiny", BenchmarkPlan(prompt_tokens=200, decode_tokens=16, runs=2))
    m = card.measured
    assert m is not None
    assert m.prefill_tokens_per_second > 0 and m.decode_tokens_per_second is not None
    assert m.decode_tokens_per_second > 0 and card.tokens_per_second == m.decode_tokens_per_second
    assert 120 <= m.prompt_tokens <= 200 + 8 and 2 <= m.decode_tokens <= 16
    assert (m.engine, m.threads, m.runs) == ("llamacpp", 1, 2)
    assert m.machine == describe_machine() and "CPUs" in m.machine
    assert m.measured_at.endswith("+00:00")
    assert (await catalog.get("tiny")).measured == m  # stored in the database
    assert deployments.list() == []  # the scratch engine was not a deployment


async def test_a_deployed_model_is_measured_on_its_deployment_and_shows_the_figures(
    services: tuple[CatalogService, DeploymentService],
) -> None:
    catalog, deployments = services
    deployment = await deployments.create({"name": "tiny-live", "model": "tiny", "parallel": 2})
    assert deployment.spec.card is not None and deployment.spec.card["measured"] is None
    card = await deployments.benchmark("tiny", BenchmarkPlan(prompt_tokens=32, decode_tokens=8, runs=1))
    assert deployment.loaded and deployment.queue.busy == 0  # it ran there and gave its slot back
    live = deployments.list()[0]
    assert live.spec.card is not None and card.measured is not None
    assert live.spec.card["measured"] == card.measured.model_dump(mode="json")
    assert live.spec.card["tokens_per_second"] == card.tokens_per_second
    # an operator's re-seed of built-ins keeps measured figures (they are the server's, not the file's)
    await catalog.seed_builtins()
    assert (await catalog.get("tiny")).measured == card.measured


async def test_bad_plans_and_unknown_models_are_refused(
    services: tuple[CatalogService, DeploymentService],
) -> None:
    _, deployments = services
    with pytest.raises(InvalidRequestError, match="benchmark limits"):
        BenchmarkPlan(runs=0)
    with pytest.raises(Exception, match="no model 'nope'"):
        await deployments.benchmark("nope", BenchmarkPlan())
    with pytest.raises(InvalidRequestError, match="too small"):
        # the tiny model's context is 256 tokens: no room for a 1024-token decode
        await deployments.benchmark("tiny", BenchmarkPlan(prompt_tokens=64, decode_tokens=1024))


def test_cpu_flags_are_the_kernel_flags_this_cpu_reports_in_their_listed_order() -> None:
    flags = cpu_flags()
    assert flags == [f for f in KERNEL_FLAGS if f in flags]
    cpuinfo = Path("/proc/cpuinfo").read_text()
    if " sse4_2 " in cpuinfo.replace("\n", " "):  # every x86-64 CPU these tests run on
        assert "sse4_2" in flags
