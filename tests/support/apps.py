"""An Alizé app over scripted engines, driven in-process with Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.support.scripted_engine import ScriptedEngine

from alize.api.app import create_app
from alize.config import DeploymentSettings, LimitSettings, Settings
from alize.engines.registry import EngineRegistry
from alize.store.testing import migrated_sqlite

SCENARIOS = ("echo", "slow", "error-mid-stream", "error-first", "tool-json", "zero-usage")


@contextmanager
def scripted_client(
    tmp_path: Path, *, limits: LimitSettings | None = None, parallel: int = 2
) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path,
        default_model="echo",
        load_on_start=False,
        deployments=[
            DeploymentSettings(
                name=s, engine="scripted", model_path=Path(s), parallel=parallel, ctx_per_slot=256
            )
            for s in SCENARIOS
        ],
        limits=limits or LimitSettings(),
    )
    with scripted_app(settings) as client:
        yield client


def scripted_app(settings: Settings) -> TestClient:
    """An app whose deployments may use the scripted engine (``engine="scripted"``). Its SQLite
    database starts as a copy of one migrated once per process (migrating costs more than
    most of these tests)."""
    database = settings.data_dir / "alize.db"
    if settings.database_url is None and not database.exists():
        migrated_sqlite(database)
    registry = EngineRegistry(load_entry_points=False)
    registry.register("scripted", ScriptedEngine)
    return local_client(create_app(settings, registry=registry))


def local_client(app: FastAPI) -> TestClient:
    """A test client that calls the app as ``http://127.0.0.1`` (a loopback name: in open mode
    the server answers to no other, and Starlette's default ``testserver`` is not one)."""
    return TestClient(app, base_url="http://127.0.0.1")
