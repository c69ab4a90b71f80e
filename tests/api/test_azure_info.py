"""``GET /models/info`` (Azure AI Model Inference) reports the default model's real task."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.apps import scripted_app

from alize.config import DeploymentSettings, Settings


@pytest.mark.parametrize(("default", "model_type"), [("echo", "chat-completion"), ("embed", "embeddings")])
def test_info_names_the_default_models_task(tmp_path: Path, default: str, model_type: str) -> None:
    settings = Settings(
        data_dir=tmp_path,
        default_model=default,
        load_on_start=False,
        deployments=[
            DeploymentSettings(name=s, engine="scripted", model_path=Path(s), ctx_per_slot=256)
            for s in ("echo", "embed")
        ],
    )
    with scripted_app(settings) as client:
        if default == "embed":  # loaded by a first request: its engine says what it does
            assert client.post("/v1/embeddings", json={"model": "embed", "input": "a b"}).status_code == 200
        else:
            body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
        info = client.get("/models/info").json()
    assert info == {"model_name": default, "model_type": model_type, "model_provider_name": "Alizé"}
