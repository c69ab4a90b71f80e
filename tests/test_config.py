"""Settings refuse what they do not know: a misspelt key is an error naming it, not a value lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from alize.config import Settings


def test_an_unknown_key_in_a_declared_deployment_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIZE_DEPLOYMENTS", json.dumps([{"name": "m", "price_input_per_milion": 5}]))
    with pytest.raises(ValidationError, match="price_input_per_milion"):
        Settings()


def test_an_unknown_key_in_a_settings_group_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIZE_ENGINE__PARALEL", "8")
    with pytest.raises(ValidationError, match="paralel"):
        Settings()


def test_serve_names_the_bad_field_and_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env["ALIZE_DEPLOYMENTS"] = json.dumps([{"name": "m", "paralel": 4}])
    done = subprocess.run(
        [sys.executable, "-m", "alize.cli.main", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "deployments.0.paralel" in done.stderr and "Traceback" not in done.stderr
