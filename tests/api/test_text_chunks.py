"""A text-only chunk laid out once per choice is byte for byte the chunk the models dump."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from alize.api.encode import TextChunks, chunk_encoder
from alize.gateway.generation import Generation
from alize.protocol.openai.chat import ChatChunkChoice, ChatDelta

TEXTS = [
    "Hello",
    " ",
    'quote " and backslash \\ and slash /',
    "new\nline\ttab\rreturn\x08\x0c",
    "\x00\x01\x1f\x7f control",
    "héllo wörld, 日本語, emoji 🎉👩‍💻",
    "\u2028\u2029 line separators",
    "</script><script>alert(1)</script>",
    "x" * 5000,
]


def _generation() -> Generation:
    fake = SimpleNamespace(request_id="req_0123456789abcdef", created=1796000000, deployment="dépl-1")
    return cast(Generation, fake)


def _dumped(index: int, text: str) -> bytes:
    """What stream_chat built for a text event before the layout existed."""
    out = ChatDelta()
    out.content = text
    return chunk_encoder(_generation())([ChatChunkChoice(index=index, delta=out, finish_reason=None)])


@pytest.mark.parametrize("index", [0, 1, 7])
def test_the_laid_out_chunk_is_the_dumped_chunk(index: int) -> None:
    text_chunk = TextChunks(chunk_encoder(_generation()))
    for text in TEXTS:
        assert text_chunk(index, text) == _dumped(index, text)


def test_each_choice_has_its_own_layout() -> None:
    text_chunk = TextChunks(chunk_encoder(_generation()))
    assert text_chunk(0, "a") == _dumped(0, "a")
    assert text_chunk(1, "a") == _dumped(1, "a")
    assert text_chunk(0, "b") == _dumped(0, "b")
