"""Reading streamed chat replies of the openai SDK, and what their chunk count must be."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def text_of(chunks: Sequence[Any]) -> str:
    """The text of the first choice of a streamed chat reply."""
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finishes_of(chunks: Sequence[Any]) -> list[str]:
    """The finish reasons the first choice reported, in order (one for a well-formed stream)."""
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def tokens_without_a_chunk(text: str) -> int:
    """llama.cpp streams one chunk per token, except that it holds back tokens carrying part of
    a multi-byte UTF-8 character until the character is complete: a k-byte character can swallow
    at most k - 1 tokens into the chunk of the token that completes it."""
    return sum(len(ch.encode()) - 1 for ch in text)


def assert_one_chunk_per_token(chunks: int, completion_tokens: int, text: str, *, stopped: bool) -> None:
    """``stopped``: the end-of-generation token may be counted without producing text."""
    assert chunks <= completion_tokens, (chunks, completion_tokens)
    slack = tokens_without_a_chunk(text) + (1 if stopped else 0)
    assert completion_tokens - chunks <= slack, (chunks, completion_tokens, text)
