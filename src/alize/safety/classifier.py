"""The previous content classifier (``alize-ngram``): numpy inference over shipped weights.

Still the server's default (``ALIZE_SAFETY__CLASSIFIER``); :mod:`alize.safety.staged`
(``alize``) is more accurate (held-out flagged F1 0.752 against this one's 0.718,
docs/benchmarks.md) and blends this model's probabilities into its English stage
(:meth:`ContentClassifier.window_max_probabilities`).

Model (trained by :mod:`alize.safety.train`): for every head (see :mod:`alize.safety.categories`)
two logistic regressions whose probabilities are averaged —

* one over MiniLM features: the mean of the token embeddings after MiniLM's embedding layer
  (word + position, layer-normalised). Running no transformer layer keeps a 200-word text at
  a few milliseconds on one core, which is what lets the classifier sit in the request path.
  Richer MiniLM features were measured in 5-fold cross-validation on the dev training part and
  did not pay for themselves: the full six layers (first 128 tokens, mean-pooled, as a third
  model in the average) raised "flagged" F1 by ~0.005 and cost ~40 ms per text (numpy or int8
  torch on one core), over the 20 ms budget; "static" embeddings distilled from the full model
  (each vocabulary token run through the six layers alone, model2vec-style) scored *below* the
  plain embedding layer (0.72 vs 0.74 alone); max/min pooling of the embedding layer, other
  regularisation strengths and softer class weights were all within noise or worse;
* one over hashed word/character n-grams (:mod:`alize.safety.ngrams`), which catches spellings
  and slurs that sub-word embeddings blur.

What did help, in cross-validation: more training data (hand-written examples of each dev-set
category and of benign texts that share their vocabulary — news, history, medicine, sex
education, untargeted profanity; ``data/extra.jsonl``), about +0.02 "flagged" F1; and choosing
thresholds on the function inference actually runs (the maximum over 200-word windows, below)
rather than on whole texts, about +0.01. Hand-written French, German, Spanish and Italian
examples (mostly benign) cut false positives on benign non-English text five-fold on a separate
probe, for about -0.01 English "flagged" F1 in cross-validation (docs/benchmarks.md). Tried and
not kept: alt-profanity-check's own model
(reimplemented in numpy, exact to 3e-8) as a third member of the "any" gate: +0.019 out-of-fold
but +0.009 cross-fitted (a bootstrap interval straddling zero), 0.731 held-out against 0.735,
0.7 MB more weights, and it would fold the benchmark's baseline into the system compared with it.

Each head's averaged probability ``p`` is then calibrated as ``sigmoid(logit(p) - logit(t))``
where ``t`` is the head's decision threshold chosen on out-of-fold training predictions, so
0.5 is the default threshold for every score the service exposes.

The eight dev-set heads are *gated* by a ninth head trained on "flagged for anything": their
score is the geometric mean of their own calibrated score and the gate's. Per-category heads
learn from few positives (eighteen for hate/threatening) and their thresholds are noisy;
requiring the better-trained "any" head to agree keeps the union of eight noisy heads from
piling up false positives. With thresholds cross-fitted (chosen on one half of the training
part, scored on the other) gated and ungated tie on "flagged" F1 (0.755 each); gating is kept
for its higher precision, which matters for a request-path filter.

Long texts are cut into windows of ``window_words`` words, all windows of a batch are scored
together, and each text takes the maximum per head over its windows (harm in one paragraph is
not diluted by the rest of a long document).

The weights file is an ``.npz`` of plain arrays (loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from alize.errors import ServiceUnavailableError
from alize.safety.calibration import GATE_HEAD, calibrate, sigmoid
from alize.safety.encoder import MiniLMEncoder
from alize.safety.ngrams import sparse_tfidf

F32 = npt.NDArray[np.float32]
FORMAT_VERSION = 1
WEIGHTS_NAME = "classifier.npz"
#: windows scored per vectorised pass (64 x ~260 tokens x 384 floats is about 25 MB)
WINDOW_CHUNK = 64


def default_weights_path() -> Path:
    """The weights shipped inside the package (``alize/safety/data/classifier.npz``)."""
    return Path(str(resources.files("alize.safety").joinpath("data", WEIGHTS_NAME)))


@dataclass(frozen=True)
class ClassifierWeights:
    """Everything the numpy forward pass needs; see ``train.py`` for how each array is made."""

    heads: tuple[str, ...]
    num_layers: int
    max_tokens: int
    window_words: int
    buckets: int
    dense_mean: F32
    dense_scale: F32
    dense_w: F32  # (hidden, heads)
    dense_b: F32  # (heads,)
    ngram_w: F32  # (buckets, heads)
    ngram_b: F32
    idf: F32  # (buckets,)
    thresholds: F32  # (heads,) on the averaged probability
    gated: npt.NDArray[np.bool_]  # (heads,) heads whose score is gated by the "any" head

    def save(self, path: Path) -> None:
        """Write a compressed ``.npz`` (float16 for the big n-gram table: halves the file)."""
        np.savez_compressed(
            path,
            format_version=np.array(FORMAT_VERSION),
            heads=np.array(self.heads),
            config=np.array([self.num_layers, self.max_tokens, self.window_words, self.buckets]),
            dense_mean=self.dense_mean,
            dense_scale=self.dense_scale,
            dense_w=self.dense_w,
            dense_b=self.dense_b,
            ngram_w=self.ngram_w.astype(np.float16),
            ngram_b=self.ngram_b,
            idf=self.idf.astype(np.float16),
            thresholds=self.thresholds,
            gated=self.gated,
        )

    @classmethod
    def load(cls, path: Path) -> ClassifierWeights:
        """Read a weights file written by :meth:`save`; refuses other format versions."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise ServiceUnavailableError(
                f"cannot read moderation weights {path}: {exc}", code="moderation_unavailable"
            ) from exc
        if int(arrays["format_version"]) != FORMAT_VERSION:
            raise ServiceUnavailableError(
                f"moderation weights {path} have format {int(arrays['format_version'])}, "
                f"expected {FORMAT_VERSION}; rerun python -m alize.safety.train",
                code="moderation_unavailable",
            )
        num_layers, max_tokens, window_words, buckets = (int(v) for v in arrays["config"])

        def f32(key: str) -> F32:
            return np.ascontiguousarray(arrays[key], dtype=np.float32)

        return cls(
            heads=tuple(str(h) for h in arrays["heads"]),
            num_layers=num_layers,
            max_tokens=max_tokens,
            window_words=window_words,
            buckets=buckets,
            dense_mean=f32("dense_mean"),
            dense_scale=f32("dense_scale"),
            dense_w=f32("dense_w"),
            dense_b=f32("dense_b"),
            ngram_w=f32("ngram_w"),
            ngram_b=f32("ngram_b"),
            idf=f32("idf"),
            thresholds=f32("thresholds"),
            gated=np.asarray(arrays["gated"], dtype=np.bool_),
        )


def split_windows(texts: list[str], window_words: int) -> tuple[list[str], list[int]]:
    """Cut each text into windows of at most ``window_words`` words; returns windows and owners.

    Every text yields at least one window (an empty text is scored as the empty string).
    """
    windows: list[str] = []
    owners: list[int] = []
    for index, text in enumerate(texts):
        words = text.split()
        for start in range(0, max(len(words), 1), window_words):
            windows.append(" ".join(words[start : start + window_words]))
            owners.append(index)
    return windows, owners


class ContentClassifier:
    """Calibrated per-head scores for a batch of texts. Thread-safe; construct once, share."""

    def __init__(self, weights: ClassifierWeights, encoder: MiniLMEncoder | None = None) -> None:
        self.weights = weights
        self.heads = weights.heads
        self.encoder = encoder or MiniLMEncoder(num_layers=weights.num_layers, max_tokens=weights.max_tokens)
        if (self.encoder.num_layers, self.encoder.max_tokens) != (weights.num_layers, weights.max_tokens):
            raise ValueError("encoder settings differ from the ones the weights were trained with")
        self._gate = self.heads.index(GATE_HEAD) if GATE_HEAD in self.heads else None

    @classmethod
    def from_path(cls, path: Path | None = None) -> ContentClassifier:
        """Load weights (the packaged ones by default) and build the matching encoder."""
        return cls(ClassifierWeights.load(path or default_weights_path()))

    def raw_probabilities(self, texts: list[str]) -> F32:
        """Averaged, uncalibrated head probabilities, one row per text (no windowing).

        Training calls this on out-of-fold texts, so it is the exact function being thresholded.
        """
        w = self.weights
        dense = (self.encoder.encode(texts) - w.dense_mean) / w.dense_scale
        dense_logits = (dense @ w.dense_w + w.dense_b).astype(np.float32, copy=False)
        ngram_logits = np.tile(w.ngram_b, (len(texts), 1))
        for row, text in enumerate(texts):
            indices, values = sparse_tfidf(text, w.buckets, w.idf)
            if indices.size:
                ngram_logits[row] += values @ w.ngram_w[indices]
        probs: F32 = 0.5 * (sigmoid(dense_logits) + sigmoid(ngram_logits))
        return probs.astype(np.float32, copy=False)

    def window_max_probabilities(self, texts: list[str]) -> F32:
        """Uncalibrated head probabilities, the maximum over each text's windows.

        The function training's out-of-fold predictions compute (``train.py``); the English
        stage blends it with the fine-tuned MiniLM's probabilities (:mod:`alize.safety.minilm`).
        """
        return self._window_max(texts, lambda raw: raw)

    def scores(self, texts: list[str]) -> F32:
        """Calibrated head scores (0.5 = default threshold), shape (len(texts), len(heads)).

        Windows of all texts go through the encoder in one batch; each text keeps the
        maximum over its windows.
        """
        w = self.weights
        return self._window_max(texts, lambda raw: calibrate(raw, w.thresholds, w.gated, self._gate))

    def _window_max(self, texts: list[str], transform: Callable[[F32], F32]) -> F32:
        """``transform`` of every window's probabilities, then each text's maximum over them."""
        out = np.zeros((len(texts), len(self.heads)), dtype=np.float32)
        if not texts:
            return out
        windows, owners = split_windows(texts, self.weights.window_words)
        # chunks bound the padded (windows x tokens x 384) activation for very long inputs
        raw = np.concatenate(
            [
                self.raw_probabilities(windows[i : i + WINDOW_CHUNK])
                for i in range(0, len(windows), WINDOW_CHUNK)
            ]
        )
        np.maximum.at(out, np.array(owners, dtype=np.int64), transform(raw))
        return out

    def score_dicts(self, texts: list[str]) -> list[dict[str, float]]:
        """:meth:`scores` as one ``{head: score}`` mapping per text."""
        matrix = self.scores(texts)
        return [{head: float(value) for head, value in zip(self.heads, row, strict=True)} for row in matrix]
