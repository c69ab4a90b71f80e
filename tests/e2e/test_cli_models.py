"""``alize models list`` and ``alize models show`` against a live server, as an operator runs
them: a GGUF added to the catalog with ``alize models add`` appears in both, and ``list`` names
the deployments ``alize deploy`` made of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.server import LiveServer, cli
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.e2e

CARD = "cli-tiny-coder"
DEPLOYMENT = "cli-coder"


def _ok(server: LiveServer, *args: str) -> str:
    done = cli(server, *args)
    assert done.returncode == 0, f"alize {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def added(tiny_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A FIM-capable GGUF in the catalog, deployed once; removed again afterwards (the server is
    shared)."""
    path = write_tiny_llama_gguf(Path(tmp_path_factory.mktemp("cli")) / "coder.gguf", with_fim=True)
    assert _ok(tiny_server, "models", "add", str(path), "--id", CARD).startswith(f"added {CARD} ")
    _ok(tiny_server, "deploy", CARD, "--name", DEPLOYMENT)
    yield tiny_server
    _ok(tiny_server, "undeploy", DEPLOYMENT)
    _ok(tiny_server, "models", "rm", CARD)


def _rows(server: LiveServer) -> dict[str, list[str]]:
    header, *rows = _ok(server, "models", "list").splitlines()
    assert header.split() == ["ID", "TASKS", "ENGINE", "SIZE", "DEPLOYED", "AS"]
    return {row.split()[0]: row.split() for row in rows}


def test_models_list_shows_tasks_engine_and_deployments(added: LiveServer) -> None:
    cards = {m["id"]: m for m in json.loads(_ok(added, "models", "list", "--json"))}
    assert cards[CARD]["tasks"] == ["chat", "completion", "fim"]
    assert cards[CARD]["deployments"] == [DEPLOYMENT]
    rows = _rows(added)
    assert rows.keys() == cards.keys()  # the table and the JSON list the same catalog
    assert rows[CARD][1:3] == ["chat,completion,fim", "llamacpp"] and rows[CARD][-1] == DEPLOYMENT
    assert rows["smollm2-135m-instruct"][-1] == "-"  # in the catalog, not deployed on this server


def test_models_show_prints_the_card_and_an_unknown_id_fails(added: LiveServer) -> None:
    card = json.loads(_ok(added, "models", "show", CARD))
    assert (card["id"], card["supports_fim"], card["engine"]) == (CARD, True, "llamacpp")
    assert card["tasks"] == ["chat", "completion", "fim"]
    missing = cli(added, "models", "show", "no-such-model")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: 404: ") and "no-such-model" in missing.stderr
