"""One teardown for the app's services: everything built is closed, last built first, whether
the app stops normally or its start-up fails half-way."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.apps import scripted_app

from alize.chat.passwords import PasswordPool
from alize.config import Settings
from alize.deployments.manager import DeploymentManager
from alize.deployments.packs import PackService
from alize.gateway.holds import HoldSweeper
from alize.gateway.pipeline import PolicyPipeline
from alize.gateway.tenancy import Tenancy, UnsafeBindError
from alize.retention import RetentionSweeper
from alize.store.database import Database

CLOSERS = [
    ("drain", PolicyPipeline, "drain"),
    ("holds", HoldSweeper, "stop"),
    ("retention", RetentionSweeper, "stop"),
    ("chat", PasswordPool, "close"),
    ("tenancy", Tenancy, "aclose"),
    ("packs", PackService, "close"),
    ("deployments", DeploymentManager, "close"),
    ("db", Database, "close"),
]


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for label, cls, name in CLOSERS:
        original = getattr(cls, name)

        def spy(self: object, *args: object, _label: str = label, _original: object = original) -> object:
            calls.append(_label)
            return _original(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(cls, name, spy)
    return calls


def test_shutdown_closes_everything_once_in_reverse_order(tmp_path: Path, closed: list[str]) -> None:
    with scripted_app(Settings(data_dir=tmp_path, load_on_start=False)) as client:
        assert client.get("/health").status_code == 200
        assert closed == []
    # requests in flight settle first; the database, built first, closes last
    assert closed == ["drain", "retention", "holds", "chat", "tenancy", "packs", "deployments", "db"]


def test_a_failed_start_up_closes_what_was_built(tmp_path: Path, closed: list[str]) -> None:
    settings = Settings(data_dir=tmp_path, load_on_start=False, host="0.0.0.0")  # no admin key
    with pytest.raises(UnsafeBindError), scripted_app(settings):
        pass
    assert closed == ["chat", "tenancy", "packs", "deployments", "db"]
