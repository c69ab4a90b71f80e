"""Ranking a conversation's passages against a question.

Two rankers, picked at run time by ``alize.chat.documents``: cosine similarity of embeddings
when every passage was embedded by the embeddings deployment that is available now, else
Okapi BM25 over words (lexical: it finds passages sharing the question's words, in any
language, with no model at all). BM25 here uses the usual k1 = 1.5, b = 0.75 and the
non-negative IDF variant, computed over the conversation's own passages.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return [t for t in _WORD.findall(text.lower()) if len(t) > 1 or t.isdigit()]


def bm25_scores(query: str, passages: Sequence[str], k1: float = 1.5, b: float = 0.75) -> list[float]:
    docs = [tokens(p) for p in passages]
    if not docs:
        return []
    average = sum(len(d) for d in docs) / len(docs) or 1.0
    frequency: Counter[str] = Counter()
    for doc in docs:
        frequency.update(set(doc))
    terms = set(tokens(query))
    n = len(docs)
    idf = {t: math.log(1 + (n - frequency[t] + 0.5) / (frequency[t] + 0.5)) for t in terms}
    scores = []
    for doc in docs:
        counts = Counter(doc)
        norm = k1 * (1 - b + b * len(doc) / average)
        scores.append(sum(idf[t] * counts[t] * (k1 + 1) / (counts[t] + norm) for t in terms if counts[t]))
    return scores


def cosine_scores(query: Sequence[float], vectors: Sequence[Sequence[float]]) -> list[float]:
    if not vectors:
        return []
    matrix = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(query, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(q) or 1.0)
    norms[norms == 0] = 1.0
    return [float(s) for s in (matrix @ q) / norms]


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` best scores, best first; ties keep document order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def pack_vector(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def unpack_vector(data: bytes) -> list[float]:
    return [float(x) for x in np.frombuffer(data, dtype="<f4")]
