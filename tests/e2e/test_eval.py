"""``alize eval`` against a live server with the real engine: HumanEval on a few problems,
sandboxed, stored on the model's card with its provenance, shown on the catalog page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

ADMIN = "e2e-eval-admin-key-0123456789abcdefg"


@pytest.fixture(scope="module")
def eval_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("eval"),
        {"ALIZE_ENGINE__PARALLEL": "2", "ALIZE_ENGINE__CTX_PER_SLOT": "2048", "ALIZE_ADMIN_KEY": ADMIN},
    ) as s:
        yield s


def test_humaneval_is_scored_and_stored_on_the_card(eval_server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, "-m", "alize.cli.main", "eval", "--model", MODEL, "--base-url", eval_server.v1,
         "--limit", "4", "--max-tokens", "128", "--record", "--json", str(out)],
        env={**os.environ, "ALIZE_API_KEY": ADMIN}, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    evaluation = result["evaluation"]
    assert evaluation["task"] == "humaneval" and evaluation["metric"] == "pass@1" and evaluation["items"] == 4
    assert evaluation["score"] == result["passed"] / 4
    assert all(p["status"] in ("passed", "failed", "timeout") for p in result["items"])
    admin = {"Authorization": f"Bearer {ADMIN}"}
    url = f"{eval_server.url}/admin/api/models/{result['model']}"
    card = httpx.get(url, headers=admin, timeout=10).json()
    # the new run replaced the card's earlier humaneval figure (the packaged card ships one)
    (stored,) = [e for e in card["evaluations"] if e["task"] == "humaneval"]
    assert stored == evaluation
    assert card["quality_scores"]["humaneval"] == evaluation["score"]
    page = httpx.get(f"{eval_server.url}/catalog", headers=admin, timeout=10).text
    assert "humaneval pass@1" in page and "on 4 items" in page


def test_translation_is_scored_with_chrf_beside_humaneval(eval_server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "tr.json"
    done = subprocess.run(
        [sys.executable, "-m", "alize.cli.main", "eval", "--model", MODEL, "--base-url", eval_server.v1,
         "--task", "translation", "--limit", "8", "--record", "--json", str(out)],
        env={**os.environ, "ALIZE_API_KEY": ADMIN}, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["evaluation"]["metric"] == "chrF" and 0 < result["evaluation"]["score"] < 100
    assert set(result["by_language"]) == {"fr", "de", "es", "it"}
    assert all(item["hypothesis"] for item in result["items"])
    admin = {"Authorization": f"Bearer {ADMIN}"}
    card = httpx.get(
        f"{eval_server.url}/admin/api/models/{result['model']}", headers=admin, timeout=10
    ).json()
    (stored,) = [e for e in card["evaluations"] if e["task"] == "translation"]
    assert stored == result["evaluation"]  # replaced the packaged card's figure
    assert abs(card["quality_scores"]["translation"] - stored["score"] / 100) < 1e-9  # one scale
