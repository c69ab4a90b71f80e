"""Live servers shared by the e2e tests: one general server, one with a single slot, and one
keyed SmolLM2 server (an admin key, so API keys are required) that the metering tests and the
remote-provider test (as its upstream) share: every server start costs seconds of model loading."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from tests.e2e.server import LiveServer, live_server
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

MODEL = "smollm2-135m-instruct"
KEYED_ADMIN = "e2e-admin-key-0123456789abcdefghij"
#: the environment variable through which the tiny server knows its key to the keyed server
REMOTE_KEY_ENV = "ALIZE_E2E_UPSTREAM_KEY"
#: the tiny server's deployment of the tiny GGUF with FIM tokens
TINY_CODER = "tiny-coder"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The embedded default, 8 slots: what `alize serve` gives a user, a little smaller."""
    with live_server(
        tmp_path_factory.mktemp("server"),
        {
            "ALIZE_ENGINE__PARALLEL": "8",
            "ALIZE_ENGINE__CTX_PER_SLOT": "4096",
            # 32 concurrent replies on 8 slots and 2 busy cores can wait past the 120 s default;
            # the tests count tokens and outcomes, not latency
            "ALIZE_LIMITS__QUEUE_TIMEOUT_S": "600",
        },
    ) as s:
        yield s


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One slot and a wait queue of one: admission, disconnects and the queue bound are visible."""
    with live_server(
        tmp_path_factory.mktemp("one-slot"),
        {
            "ALIZE_ENGINE__PARALLEL": "1",
            "ALIZE_ENGINE__CTX_PER_SLOT": "2048",
            "ALIZE_LIMITS__QUEUE_MAX": "1",
        },
    ) as s:
        yield s


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """SmolLM2 alone behind keys (``KEYED_ADMIN`` is the platform admin); no chat app. Tests
    on it issue their own keys (and projects, where they count totals) so they never see each
    other's requests."""
    with live_server(
        tmp_path_factory.mktemp("keyed"),
        {
            "ALIZE_DEPLOYMENTS": json.dumps([{"name": MODEL}]),
            "ALIZE_ENGINE__PARALLEL": "4",
            "ALIZE_ENGINE__CTX_PER_SLOT": "1024",
            "ALIZE_ADMIN_KEY": KEYED_ADMIN,
            "ALIZE_CHAT__ENABLED": "false",
        },
    ) as s:
        yield s


def _as_admin(server: LiveServer, path: str, body: dict[str, str]) -> dict[str, str]:
    r = httpx.post(
        f"{server.url}/admin/api{path}",
        json=body,
        headers={"Authorization": f"Bearer {KEYED_ADMIN}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    data: dict[str, str] = r.json()
    return data


@pytest.fixture(scope="session")
def front_project(keyed_server: LiveServer) -> str:
    """A project of its own on the keyed server for the tiny server's remote requests, so its
    totals count only those."""
    return _as_admin(keyed_server, "/projects", {"name": "remote-front"})["id"]


@pytest.fixture(scope="session")
def upstream_key(keyed_server: LiveServer, front_project: str) -> str:
    return _as_admin(keyed_server, "/keys", {"name": "for-the-front", "project_id": front_project})["key"]


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, upstream_key: str) -> Iterator[LiveServer]:
    """The tiny random GGUF (loads at once), open mode, no chat app: for tests about the
    platform around a model (the torch engine's folders, remote cards, FIM, log-probabilities,
    the CLI), not about its replies. ``tiny-coder`` is the same model with FIM tokens. It knows
    a key to the keyed server in ``REMOTE_KEY_ENV``, for the remote-provider test."""
    tmp = tmp_path_factory.mktemp("tiny")
    tiny = write_tiny_llama_gguf(tmp / "tiny.gguf")
    coder = write_tiny_llama_gguf(tmp / "tiny-coder.gguf", with_fim=True)
    deployments = [
        {"name": "tiny-local", "model_path": str(tiny)},
        {"name": TINY_CODER, "model_path": str(coder)},
    ]
    env = {
        "ALIZE_DEPLOYMENTS": json.dumps(deployments),
        "ALIZE_DEFAULT_MODEL": "tiny-local",
        "ALIZE_ENGINE__PARALLEL": "2",
        "ALIZE_ENGINE__CTX_PER_SLOT": "256",
        "ALIZE_ENGINE__THREADS": "1",
        "ALIZE_CHAT__ENABLED": "false",
        REMOTE_KEY_ENV: upstream_key,
    }
    with live_server(tmp, env) as s:
        yield s
