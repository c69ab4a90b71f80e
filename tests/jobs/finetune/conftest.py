"""A tiny llama base (GGUF, grouped-query attention) loaded once per module for the fine-tuning tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

from alize.jobs.finetune.base import BaseFacts, LoadedBase, load_base, read_base_facts


def chat_line(user: str, answer: str, *, system: str | None = None) -> dict[str, object]:
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def jsonl(lines: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


#: a toy task the tiny model learns in a few steps: a fixed answer per keyword
TOY = [
    chat_line(f"{word} please", answer)
    for word, answer in [
        ("tax", '{"d":"tax"}'),
        ("car", '{"d":"car"}'),
        ("home", '{"d":"home"}'),
        ("baby", '{"d":"civil"}'),
    ]
] * 3


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-base")
    return write_tiny_llama_gguf(folder / "tiny.gguf", n_head_kv=2, scale=0.2, n_ctx=512, seed=3)


@pytest.fixture(scope="module")
def tiny_facts(tiny_gguf: Path) -> BaseFacts:
    return read_base_facts(tiny_gguf)


@pytest.fixture
def tiny_base(tiny_facts: BaseFacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedBase]:
    """A fresh model each test (training changes it), from a cache shared by the session."""
    yield load_base(tiny_facts, tmp_path_factory.getbasetemp() / "base-cache")
