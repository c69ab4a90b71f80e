"""Alizé's Serve applications as `alize ray apps` lists them, without a cluster: only those of
the namespace (Serve's names are cluster-wide), replicas summed by state over the application's
deployments, the deployment named without the namespace. On a real cluster:
tests/e2e/test_ray_stale.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from alize.cli.main import app
from alize.engines import ray_apps
from alize.engines.ray_apps import application_name, list_apps


def _app(status: str, *states: dict[str, int]) -> Any:
    deployments = {f"d{i}": SimpleNamespace(replica_states=s) for i, s in enumerate(states)}
    return SimpleNamespace(status=status, message="", last_deployed_time_s=1.5, deployments=deployments)


def test_only_the_namespaces_applications_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    applications = {
        "alize.chat": _app("RUNNING", {"RUNNING": 2}, {"RUNNING": 1, "STARTING": 1}),
        "alize.old": _app("DEPLOY_FAILED", {}),
        "other.chat": _app("RUNNING", {"RUNNING": 4}),  # another Alizé namespace
        "alizechat": _app("RUNNING", {"RUNNING": 1}),  # not ours: no separator
    }
    status = SimpleNamespace(applications=applications)
    monkeypatch.setattr(ray_apps, "_serve", lambda: SimpleNamespace(status=lambda: status))
    chat, old = list_apps("alize")
    assert (chat.name, chat.deployment, chat.status) == ("alize.chat", "chat", "RUNNING")
    assert chat.replicas == {"RUNNING": 3, "STARTING": 1} and chat.running == 3
    assert (old.deployment, old.running, old.deployed_at) == ("old", 0, 1.5)
    assert [a.name for a in list_apps("other")] == ["other.chat"]
    assert application_name("alize", "chat") == "alize.chat"


def test_delete_needs_names_or_all() -> None:
    result = CliRunner().invoke(app, ["ray", "delete"])
    assert result.exit_code == 2 and "name the applications to delete, or --all" in result.output
