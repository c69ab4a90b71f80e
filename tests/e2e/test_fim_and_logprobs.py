"""Fill-in-the-middle and log-probabilities over HTTP, on the real llama.cpp engine.

FIM runs on the tiny GGUF with FIM tokens: its tokenizer is byte-level BPE with a handful of
merges, so a text without those pairs is one token per byte and a prompt's token count is known
exactly: a FIM request is the three FIM tokens of the model's vocabulary around the prefix and
the suffix, nothing else. Log-probabilities are read from SmolLM2 on the keyed server, whose
greedy replies are words (the tiny model's random bytes are mostly incomplete UTF-8).
"""

from __future__ import annotations

import httpx
import pytest
from mistralai.client import Mistral
from tests.e2e.conftest import KEYED_ADMIN, MODEL, TINY_CODER
from tests.e2e.server import LiveServer

pytestmark = pytest.mark.e2e

#: texts with none of the tiny vocabulary's merges (Ġt, he, in, er, an, on, Ġa): a token a byte
PREFIX = "def f(x):\n"
SUFFIX = "\n    return y"


AS_ADMIN = {"Authorization": f"Bearer {KEYED_ADMIN}"}


def _post(server: LiveServer, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=AS_ADMIN, timeout=120)


def test_a_fim_request_is_the_models_fim_tokens_around_prefix_and_suffix(tiny_server: LiveServer) -> None:
    body = {"model": TINY_CODER, "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 4, "temperature": 0}
    r = _post(tiny_server, "/v1/fim/completions", body)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert r.headers["x-alize-deployment"] == TINY_CODER
    assert reply["object"] == "chat.completion"  # Mistral's FIM replies use the chat shape
    assert reply["usage"]["prompt_tokens"] == 3 + len(PREFIX.encode()) + len(SUFFIX.encode())
    assert reply["usage"]["completion_tokens"] == 4 or reply["choices"][0]["finish_reason"] == "stop"
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    # the same prompt without a suffix is plain text: the three FIM tokens were the difference
    plain = _post(tiny_server, "/v1/completions", {"model": TINY_CODER, "prompt": PREFIX, "max_tokens": 1})
    assert plain.status_code == 200, plain.text
    assert plain.json()["usage"]["prompt_tokens"] == len(PREFIX.encode())
    # OpenAI's legacy completions with a suffix are the same FIM request, and greedy: same text
    legacy = _post(tiny_server, "/v1/completions", body)
    assert legacy.status_code == 200, legacy.text
    for count in ("prompt_tokens", "completion_tokens"):
        assert legacy.json()["usage"][count] == reply["usage"][count]
    assert legacy.json()["choices"][0]["text"] == reply["choices"][0]["message"]["content"]


def test_fim_through_the_mistral_sdk(tiny_server: LiveServer) -> None:
    with Mistral(api_key="unused", server_url=tiny_server.url) as client:
        reply = client.fim.complete(
            model=TINY_CODER, prompt=PREFIX, suffix=SUFFIX, max_tokens=3, temperature=0
        )
        assert reply.usage.prompt_tokens == 3 + len(PREFIX.encode()) + len(SUFFIX.encode())
        assert reply.choices[0].message is not None


def test_a_model_without_fim_tokens_refuses_fim(tiny_server: LiveServer) -> None:
    r = _post(tiny_server, "/v1/fim/completions", {"model": "tiny-local", "prompt": PREFIX, "suffix": SUFFIX})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "unsupported_feature"


def _check_entry(entry: dict[str, object], top: int) -> None:
    alternatives = entry["top_logprobs"]
    assert isinstance(alternatives, list) and len(alternatives) == top
    scores = [a["logprob"] for a in alternatives]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
    # greedy decoding: the chosen token is the most likely one
    assert (entry["token"], entry["logprob"]) == (alternatives[0]["token"], alternatives[0]["logprob"])
    assert bytes(entry["bytes"]).decode(errors="replace") == entry["token"]  # type: ignore[arg-type]


def test_chat_logprobs_one_entry_per_generated_token(keyed_server: LiveServer) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 6,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 3,
    }
    r = _post(keyed_server, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    reply = r.json()
    content = reply["choices"][0]["logprobs"]["content"]
    assert len(content) == reply["usage"]["completion_tokens"] >= 1
    for entry in content:
        _check_entry(entry, 3)
    assert "".join(e["token"] for e in content) == reply["choices"][0]["message"]["content"]
    # without logprobs there are none
    plain = _post(keyed_server, "/v1/chat/completions", {**body, "logprobs": False, "top_logprobs": None})
    assert plain.status_code == 200, plain.text
    assert plain.json()["choices"][0]["logprobs"] is None


def test_streamed_logprobs_arrive_with_their_tokens(keyed_server: LiveServer) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 6,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    entries: list[dict[str, object]] = []
    text, usage = "", None
    url = keyed_server.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=AS_ADMIN, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = httpx.Response(200, content=line[6:]).json()
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
                entries.extend((choice.get("logprobs") or {}).get("content") or [])
    assert usage is not None and len(entries) == usage["completion_tokens"] >= 1
    for entry in entries:
        _check_entry(entry, 2)
    assert "".join(str(e["token"]) for e in entries) == text


def test_completion_logprobs_in_the_legacy_shape(keyed_server: LiveServer) -> None:
    body = {
        "model": MODEL,
        "prompt": "The capital of France is",
        "max_tokens": 5,
        "temperature": 0,
        "logprobs": 2,
    }
    r = _post(keyed_server, "/v1/completions", body)
    assert r.status_code == 200, r.text
    reply = r.json()
    lp = reply["choices"][0]["logprobs"]
    n = reply["usage"]["completion_tokens"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == n >= 1
    for token, score, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True):
        # a dict by token text: two byte tokens that print alike would share a key
        assert 1 <= len(top) <= 2 and max(top.values()) == score and top[token] == score <= 0
    assert "".join(lp["tokens"]) == reply["choices"][0]["text"]
