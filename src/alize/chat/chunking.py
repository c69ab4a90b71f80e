"""Cutting a document's text into passages small enough to embed and to quote in a prompt.

Paragraphs are packed greedily up to ``size`` characters; a paragraph longer than that is cut
at sentence ends, then at spaces. Each passage after the first repeats the last ``overlap``
characters of the one before (from a word boundary), so a fact that straddles a cut is still
whole in one of them.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _pieces(paragraph: str, size: int) -> list[str]:
    """A paragraph as pieces of at most ``size`` characters, cut at sentences, then words."""
    if len(paragraph) <= size:
        return [paragraph]
    out: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > size:
            cut = sentence.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out


def _tail(text: str, overlap: int) -> str:
    if overlap <= 0 or len(text) <= overlap:
        return "" if overlap <= 0 else text
    tail = text[-overlap:]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail


def chunk_text(text: str, size: int = 800, overlap: int = 120) -> list[str]:
    """Passages of roughly ``size`` characters (never empty); ``[]`` for blank text."""
    if size < 20:
        raise ValueError("chunk size must be at least 20 characters")
    overlap = max(0, min(overlap, size // 2))
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    pieces = [piece for p in paragraphs if p for piece in _pieces(p, size)]
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 1 + len(piece) > size:
            chunks.append(current)
            carried = _tail(current, overlap)
            current = f"{carried} {piece}".strip() if len(carried) + 1 + len(piece) <= size else piece
        else:
            current = f"{current}\n{piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks
