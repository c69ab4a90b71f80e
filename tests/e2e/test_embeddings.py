"""``POST /v1/embeddings`` on the embedded default (all-MiniLM-L6-v2 on the PyTorch engine), through
the official openai and mistralai SDKs and raw HTTP."""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from mistralai.client import Mistral
from tests.e2e.server import LiveServer
from tokenizers import Tokenizer

from alize.catalog.sources import minilm_folder

pytestmark = pytest.mark.e2e

MODEL = "all-minilm-l6-v2"

#: (sentence, paraphrase) pairs on unrelated topics: each sentence must be closer to its own
#: paraphrase than to any other pair's
PARAPHRASES = [
    ("A man is playing the guitar.", "Someone is strumming a guitar."),
    ("The stock market fell sharply today.", "Share prices dropped a lot on the exchange today."),
    ("How do I reset my password?", "What are the steps to change a forgotten password?"),
    ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ("It will rain heavily tomorrow.", "Tomorrow's forecast calls for a lot of rain."),
    ("She is baking bread in the kitchen.", "A woman bakes a loaf in her kitchen."),
    ("The train to Paris was delayed.", "Our Paris-bound train ran late."),
    ("Children are playing football in the park.", "Kids kick a soccer ball around the park."),
]


def post(server: LiveServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.v1 + "/embeddings", json=body, timeout=120)


def test_paraphrases_are_closer_than_unrelated_sentences(server: LiveServer) -> None:
    first = [a for a, _ in PARAPHRASES]
    second = [b for _, b in PARAPHRASES]
    response = post(server, {"model": MODEL, "input": first + second, "encoding_format": "float"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == MODEL
    vectors = np.array([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])])
    assert vectors.shape == (16, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)  # L2-normalised
    sims = vectors[:8] @ vectors[8:].T
    for i in range(8):
        others = np.delete(sims[i], i)
        assert sims[i, i] > others.max(), (PARAPHRASES[i], sims[i])
    assert np.diag(sims).mean() > 0.6 > np.mean(sims[~np.eye(8, dtype=bool)])


def test_base64_decodes_to_the_float_vectors_and_usage_counts_real_tokens(server: LiveServer) -> None:
    texts = ["Hello world", "Embeddings turn text into vectors."]
    floats = post(server, {"model": MODEL, "input": texts}).json()
    encoded = post(server, {"model": MODEL, "input": texts, "encoding_format": "base64"}).json()
    for as_float, as_b64 in zip(floats["data"], encoded["data"], strict=True):
        raw = base64.b64decode(as_b64["embedding"])
        decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert np.allclose(decoded, as_float["embedding"], atol=1e-6)
    # counted with the model's own WordPiece tokenizer, [CLS] and [SEP] included
    tokenizer = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    expected = sum(len(tokenizer.encode(t).ids) for t in texts)
    assert expected == 4 + len(tokenizer.encode(texts[1]).ids)  # [CLS] hello world [SEP]
    assert floats["usage"] == {"prompt_tokens": expected, "total_tokens": expected, "completion_tokens": 0}


def test_openai_sdk(server: LiveServer) -> None:
    with openai.OpenAI(base_url=server.v1, api_key="x") as client:
        result = client.embeddings.create(
            model=MODEL, input=["first text", "second text"]
        )  # base64 by default
        assert [d.index for d in result.data] == [0, 1]
        assert len(result.data[0].embedding) == 384
        assert result.usage.prompt_tokens == result.usage.total_tokens > 0
        single = client.embeddings.create(model=MODEL, input="first text", encoding_format="float")
        assert np.allclose(single.data[0].embedding, result.data[0].embedding, atol=1e-5)


def test_mistral_sdk(server: LiveServer) -> None:
    with Mistral(api_key="x", server_url=server.url) as client:
        result = client.embeddings.create(model=MODEL, inputs=["Bonjour", "Hello there"])
        assert len(result.data) == 2 and len(result.data[0].embedding or []) == 384
        assert result.usage.prompt_tokens is not None and result.usage.prompt_tokens > 0


def test_chat_models_unknown_models_and_bad_inputs_are_refused(server: LiveServer) -> None:
    with openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as chat_model:
            client.embeddings.create(model="smollm2-135m-instruct", input="hello")
        assert chat_model.value.code == "unsupported_feature"
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="no-such-model", input="hello")
        cases = [
            ({"input": ["x"] * 257}, "at most 256"),
            ({"input": ["word " * 400]}, "at most 256 tokens"),
            ({"input": []}, "at least one"),
            ({"input": ["ok", ""]}, "input[1] is empty"),
            ({"input": [1, 2, 3]}, "token arrays"),
            ({"input": "x", "dimensions": 64}, "384-dimensional"),
        ]
        for extra, message in cases:
            response = post(server, {"model": MODEL, **extra})
            assert response.status_code == 400, (extra, response.text)
            assert message in response.json()["error"]["message"]


def test_embeddings_leave_exactly_one_ledger_row(server: LiveServer) -> None:
    """Embeddings go through the same policy pipeline as generation: one usage row, real tokens."""
    reply = post(server, {"model": MODEL, "input": ["Metered text", "and a second input"]})
    assert reply.status_code == 200
    request_id = reply.headers["x-request-id"]
    row = httpx.get(f"{server.url}/admin/api/usage/requests/{request_id}", timeout=30)
    assert row.status_code == 200, row.text
    data = row.json()
    assert data["deployment"] == MODEL
    assert data["prompt_tokens"] == reply.json()["usage"]["prompt_tokens"]
    assert data["completion_tokens"] == 0
    assert data["status"] == "success"
