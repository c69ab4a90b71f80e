"""Fine-tuned models through the official openai SDK: two adapters registered as
``ft:tiny:<suffix>:<job>`` cards and deployed on one base deployment; at 8 concurrent streams,
interleaved with the base, each answers as itself; undeploying one leaves the others serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from openai import NotFoundError, OpenAI
from tests.e2e.server import LiveServer, admin, live_server
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.fixtures.tiny_lora import N_KV, random_adapter

pytestmark = pytest.mark.e2e
FT = ("ft:tiny:alpha:job_a1", "ft:tiny:beta:job_b2")


def _card(model_id: str, adapter: Path) -> dict[str, Any]:
    return {
        "id": model_id,
        "display_name": model_id,
        "publisher": "tests",
        "license": "apache-2.0",
        "open_weights": True,
        "tasks": ["chat"],
        "context_length": 512,
        "architecture": "llama",
        "has_chat_template": True,
        "source": {"kind": "adapter", "base": "tiny", "path": str(adapter)},
        "fine_tune": {
            "job_id": model_id.rsplit(":", 1)[1],
            "base": "tiny",
            "training_file": "file-x",
            "trained_tokens": 1234,
            "train_loss": 0.5,
            "hyperparameters": {"n_epochs": 2},
        },
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("finetuned")
    base = write_tiny_llama_gguf(folder / "tiny.gguf", n_head_kv=N_KV, scale=0.2, n_ctx=512)
    adapters = [random_adapter(base, folder / f"{i}.gguf", seed=i) for i in range(2)]
    env = {
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": "tiny", "model_path": str(base)}]),
        "ALIZE_DEFAULT_MODEL": "tiny",
        "ALIZE_ENGINE__PARALLEL": "4",
        "ALIZE_ENGINE__CTX_PER_SLOT": "256",
        "ALIZE_CHAT__ENABLED": "false",
    }
    with live_server(folder, env) as s:
        for model_id, adapter in zip(FT, adapters, strict=True):
            assert admin(s, "POST", "/models", {"card": _card(model_id, adapter)}).status_code == 201
            created = admin(s, "POST", "/deployments", {"name": model_id, "model": model_id})
            assert created.status_code == 201, created.text
        yield s


def _ask(client: OpenAI, model: str) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "route my request"}],
        temperature=0,
        seed=1,
        max_tokens=8,
    )
    return reply.choices[0].message.content or ""


def test_each_model_answers_as_itself_at_8_streams(server: LiveServer) -> None:
    with OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
        models = ["tiny", *FT]
        alone = {m: _ask(client, m) for m in models}
        assert len(set(alone.values())) == 3
        with ThreadPoolExecutor(8) as pool:
            mixed = list(pool.map(lambda i: (models[i % 3], _ask(client, models[i % 3])), range(24)))
        assert all(answer == alone[model] for model, answer in mixed)
        listed = {m.id for m in client.models.list()}
        assert set(models) <= listed
        card = admin(server, "GET", f"/models/{FT[0]}").json()
        assert card["fine_tune"]["trained_tokens"] == 1234 and card["source"]["base"] == "tiny"


def test_undeploying_one_leaves_the_others_serving(server: LiveServer) -> None:
    with OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
        before = _ask(client, FT[0])
        assert admin(server, "DELETE", f"/deployments/{FT[1]}").status_code in (200, 204)
        with pytest.raises(NotFoundError):
            _ask(client, FT[1])
        assert _ask(client, FT[0]) == before
        assert _ask(client, "tiny")


def test_a_fine_tuned_model_needs_its_base_deployed(server: LiveServer, tmp_path: Path) -> None:
    card = _card("ft:ghost:x:job_c3", tmp_path / "none.gguf")
    card["source"]["base"] = "ghost"
    assert admin(server, "POST", "/models", {"card": card}).status_code == 201
    refused = admin(
        server, "POST", "/deployments", {"name": "ft:ghost:x:job_c3", "model": "ft:ghost:x:job_c3"}
    )
    assert refused.status_code == 409
    assert "deploy it first" in refused.json()["error"]["message"]
