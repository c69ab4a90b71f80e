"""EU AI Act transparency: every API response names the deployment and the model that produced
it, and the built-in model cards say what the model is for, where it fails and where its
weights come from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.support.apps import scripted_client

from alize.catalog.builtin import builtin_cards


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with scripted_client(tmp_path_factory.mktemp("transparency")) as c:
        yield c


CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions", {**CHAT, "stream": True}),
        ("/models/chat/completions", CHAT),
        ("/v1/completions", {"model": "echo", "prompt": "hi there", "max_tokens": 3}),
        ("/v1/moderations", {"input": "hello"}),
        ("/v1/chat/moderations", {"input": [[{"role": "user", "content": "hello"}]]}),
    ],
)
def test_every_inference_response_names_deployment_and_model(
    client: TestClient, path: str, body: dict[str, object]
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-alize-deployment"] and r.headers["x-alize-model"]
    if not body.get("stream"):
        assert r.json()["model"]
    if path.endswith("completions"):
        assert r.headers["x-alize-deployment"] == "echo"


def test_builtin_cards_carry_intended_use_limitations_licence_and_origin() -> None:
    for card in builtin_cards():
        assert card.intended_use and card.limitations and card.license and card.weights_origin, card.id
