"""A Hugging Face text-generation folder on a live server: a tiny random Llama written by the test
is added through the admin API, deployed on the PyTorch engine, and chatted with through the
official ``openai`` SDK, streamed and not; then undeployed. The text is gibberish, so the checks
are on structure: usage, finish reasons, max_tokens, stop strings, metering."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from tests.e2e.server import LiveServer, admin
from tests.e2e.streaming import finishes_of
from tests.fixtures.tiny_hf import write_tiny_causal_lm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("torch-generate")


@pytest.fixture(scope="module")
def server(tiny_server: LiveServer) -> LiveServer:
    """The shared tiny-GGUF server (tests/e2e/conftest.py): the HF folder is added at run time."""
    return tiny_server


@pytest.fixture
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def test_an_hf_folder_is_added_deployed_chatted_with_and_undeployed(
    server: LiveServer, workdir: Path, client: openai.OpenAI
) -> None:
    folder = write_tiny_causal_lm(workdir / "tiny-hf-llama")
    added = admin(server, "POST", "/models", {"path": str(folder), "id": "tiny-hf"})
    assert added.status_code == 201, added.text
    card = added.json()
    assert card["engine"] == "torch" and card["tasks"] == ["chat", "completion"]
    assert card["architecture"] == "LlamaForCausalLM" and card["context_length"] == 512
    deployed = admin(
        server,
        "POST",
        "/deployments",
        {"name": "tiny-hf", "model": "tiny-hf", "parallel": 2, "price_output_per_million": 1_000_000},
    )
    assert deployed.status_code == 201, deployed.text
    messages: Any = [{"role": "user", "content": "Count from one to ten."}]

    raw = client.chat.completions.with_raw_response.create(
        model="tiny-hf", messages=messages, max_tokens=10, temperature=0.8, seed=7
    )
    assert "x-alize-cold-start-ms" in raw.headers  # loaded on first use
    reply = raw.parse()
    assert reply.model == "tiny-hf" and reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 10
    assert reply.usage.prompt_tokens > 8  # ChatML markers + the message
    row = admin(server, "GET", f"/usage/requests/{raw.headers['x-request-id']}").json()
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_micros"]) == (
        reply.usage.prompt_tokens,
        10,
        10,
    )

    stream = client.chat.completions.create(
        model="tiny-hf",
        messages=messages,
        max_tokens=10,
        temperature=0.8,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 1  # token by token, not one blob
    assert "".join(content) == reply.choices[0].message.content  # same seed, same sample
    assert finishes_of(chunks) == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10

    text = reply.choices[0].message.content or ""
    # cut the same sample at a stop string taken from its middle (10 tokens of a random model's
    # vocabulary always give more than 4 characters)
    assert len(text) > 4, text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    stopped = client.chat.completions.create(
        model="tiny-hf", messages=messages, max_tokens=10, temperature=0.8, seed=7, stop=[stop]
    )
    assert stopped.choices[0].message.content == text[: text.find(stop)]
    assert stopped.choices[0].finish_reason == "stop"

    completion = client.completions.create(model="tiny-hf", prompt="The quick", max_tokens=4, temperature=0)
    assert completion.usage is not None and completion.usage.completion_tokens == 4

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="tiny-hf", messages=messages, max_tokens=4, response_format={"type": "json_object"}
        )
    assert "llama.cpp" in refused.value.message

    gone = admin(server, "DELETE", "/deployments/tiny-hf")
    assert gone.status_code == 200, gone.text
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="tiny-hf", messages=messages, max_tokens=2)
