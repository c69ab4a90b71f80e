"""Hashed word and character n-gram features, computed identically at training and inference.

Why hashing and not a stored vocabulary: the weights file then needs one weight row per bucket
and no strings, and training (scikit-learn) and inference (numpy) cannot drift apart because
both call :func:`ngram_buckets`.

Features: lower-cased word unigrams and bigrams, and character 2- to 5-grams inside
space-padded words (scikit-learn's ``char_wb``). Character n-grams are hashed with numpy in one
vectorised pass (a polynomial rolling hash over code points, finished with splitmix64), because
a per-n-gram Python loop was the slowest step of a request (about 4 ms for 200 words); words use
``zlib.crc32``. Both are fixed arithmetic, so bucket ids are stable across processes and
platforms, unlike ``hash()``.

Term counts are damped as ``1 + log(tf)``, weighted by a stored per-bucket IDF, and the vector
is L2-normalised.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"\w+", re.UNICODE)
CHAR_ORDERS: tuple[int, ...] = (2, 3, 4, 5)
_PRIME = np.uint64(1_000_003)
# salts keep words, bigrams and each character order in separate hash streams
_SALT_WORD = np.uint64(0x9E3779B97F4A7C15)
_SALT_BIGRAM = np.uint64(0xC2B2AE3D27D4EB4F)

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def _splitmix(x: U64) -> U64:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    out: U64 = x ^ (x >> np.uint64(31))
    return out


def _rolling(codes: U64, n: int) -> U64:
    """Polynomial hash of every length-``n`` slice of ``codes`` (wrapping uint64 arithmetic)."""
    m = len(codes) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    for k in range(n):
        h = h * _PRIME + codes[k : k + m]
    return h


def _word_hashes(words: list[str]) -> U64:
    """CRC-32 of each word (C speed for a few hundred short strings), widened to uint64."""
    return np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))


def ngram_buckets(text: str, buckets: int) -> tuple[I64, I64]:
    """(bucket ids, counts) of the text's word and character n-grams, ids sorted and unique."""
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    padded = "".join(f" {w} " for w in words)
    codes = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64) + np.uint64(1)
    owner = np.repeat(np.arange(len(words)), [len(w) + 2 for w in words])
    parts: list[U64] = []
    for n in CHAR_ORDERS:
        if len(codes) < n:
            break
        h = _rolling(codes, n)
        inside = owner[: len(h)] == owner[n - 1 :]
        parts.append(h[inside] + np.uint64(n))
    word_h = _word_hashes(words)
    parts.append(word_h ^ _SALT_WORD)
    if len(words) > 1:
        parts.append((word_h[:-1] * _PRIME + _splitmix(word_h[1:])) ^ _SALT_BIGRAM)
    ids = (_splitmix(np.concatenate(parts)) % np.uint64(buckets)).astype(np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    return unique, counts.astype(np.int64)


def sparse_tfidf(
    text: str, buckets: int, idf: npt.NDArray[np.float32]
) -> tuple[I64, npt.NDArray[np.float32]]:
    """(indices, values) of the L2-normalised, IDF-weighted, log-damped n-gram vector."""
    indices, counts = ngram_buckets(text, buckets)
    if not indices.size:
        return indices, np.zeros(0, dtype=np.float32)
    values = (1.0 + np.log(counts.astype(np.float32))) * idf[indices]
    norm = float(np.linalg.norm(values))
    if norm > 0.0:
        values /= norm
    return indices, values.astype(np.float32, copy=False)
