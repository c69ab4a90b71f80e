"""Train the multilingual stage and rewrite ``alize/safety/data/multilingual.npz`` (training only).

Usage::

    python -m alize.safety.multilingual_train [--data shared/data/moderation-dev.jsonl]

Rows: the dev set's training part and ``data/extra.jsonl`` (the same corpus and label matrix
as the English stage; the multilingual probe in ``tests/safety/data`` is never read). Each text
is embedded by USE multilingual v3 (its first window of ``WINDOW_WORDS`` words for training;
out-of-fold predictions take the maximum over head and tail, as inference does).

For every head, a class-balanced logistic regression; the regularisation ``C`` is chosen in
5-fold cross-validation (folds stratified by "flagged for anything") on the F1 of *harmful*
(any harm head at or over 0.5 after calibration) over the **non-English** rows, since this
stage only ever sees non-English or undetermined text. Thresholds are chosen on the same
out-of-fold predictions: on the non-English rows for the heads with non-English positives, on
all rows for the others. A cross-fitted figure (thresholds from one half, scored on the other)
is printed beside the optimistic one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from alize.language import LanguageGuesser
from alize.safety.calibration import GATE_HEAD, calibrate, sigmoid
from alize.safety.categories import DEV_HEADS, HEADS
from alize.safety.dataset import load_dev, split_indices
from alize.safety.finetune_select import best_threshold, prf
from alize.safety.multilingual import MultilingualWeights, SentenceEncoder, default_weights_path, word_windows
from alize.safety.train import DEFAULT_DATA, extra_examples, label_matrix

F32 = npt.NDArray[np.float32]
WINDOW_WORDS = 128
C_GRID = (0.3, 1.0, 3.0, 10.0)
FOLDS = 5
SEED = 0
HARM_HEADS = (*DEV_HEADS, "dangerous")
GATED = np.array([h in DEV_HEADS for h in HEADS])


def _fit(x: F32, y: npt.NDArray[np.int8], c: float) -> tuple[F32, float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=SEED)
    model.fit(x, y)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def _fit_all(x: F32, labels: npt.NDArray[np.int8], rows: npt.NDArray[np.int64], c: float) -> tuple[F32, F32]:
    w = np.zeros((x.shape[1], len(HEADS)), dtype=np.float32)
    b = np.full(len(HEADS), -10.0, dtype=np.float32)
    for j in range(len(HEADS)):
        known = rows[labels[rows, j] >= 0]
        if len(set(labels[known, j].tolist())) == 2:
            w[:, j], b[j] = _fit(x[known], labels[known, j], c)
    return w, b


def harmful(probs: F32, thresholds: F32) -> npt.NDArray[np.bool_]:
    scores = calibrate(probs, thresholds, GATED, HEADS.index(GATE_HEAD))
    cols = [HEADS.index(h) for h in HARM_HEADS]
    out: npt.NDArray[np.bool_] = scores[:, cols].max(axis=1) >= 0.5
    return out


def choose_thresholds(
    labels: npt.NDArray[np.int8], probs: F32, rows: npt.NDArray[np.int64], foreign: npt.NDArray[np.bool_]
) -> F32:
    out = np.full(len(HEADS), 0.5, dtype=np.float32)
    for j in range(len(HEADS)):
        for pool in (rows[foreign[rows]], rows):
            known = pool[labels[pool, j] >= 0]
            if known.size and (labels[known, j] == 1).sum() >= 3:
                out[j] = best_threshold(labels[known, j], probs[known, j])[0]
                break
    return out


def train(data: Path, out: Path, log: Any = sys.stdout) -> MultilingualWeights:
    from sklearn.model_selection import StratifiedKFold

    dev_all = load_dev(data)
    train_idx, _ = split_indices(dev_all)
    dev = [dev_all[i] for i in train_idx]
    extra = extra_examples()
    texts = [r.text for r in dev] + [t for t, _ in extra]
    labels = label_matrix(dev, extra)
    guesser = LanguageGuesser()
    foreign = np.array([guesser.detect_sync(t) != "en" for t in texts])
    windows, owner_list = word_windows(texts, WINDOW_WORDS)
    owners = np.array(owner_list, dtype=np.int64)
    encoder = SentenceEncoder()
    emb = np.concatenate([encoder.encode(windows[i : i + 64]) for i in range(0, len(windows), 64)])
    first = emb[np.unique(owners, return_index=True)[1]]
    truth = labels[:, HEADS.index(GATE_HEAD)] == 1
    print(
        f"{len(texts)} rows, {int(foreign.sum())} non-English ({int((truth & foreign).sum())} harmful)",
        file=log,
    )
    strata = truth.astype(np.int64)
    splits = list(StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(np.zeros(len(texts)), strata))
    every = np.arange(len(texts), dtype=np.int64)
    best: tuple[float, float, F32] | None = None
    for c in C_GRID:
        oof = np.zeros((len(texts), len(HEADS)), dtype=np.float32)
        for a, b in splits:
            w, bias = _fit_all(first, labels, a.astype(np.int64), c)
            keep = np.isin(owners, b)
            probs = sigmoid(emb[keep] @ w + bias)
            part = np.zeros_like(oof)
            np.maximum.at(part, owners[keep], probs)
            oof[b] = part[b]
        t = choose_thresholds(labels, oof, every, foreign)
        fig = prf(truth[foreign], harmful(oof[foreign], t)[...])
        crossed = _cross_fitted(labels, oof, foreign, truth)
        print(f"C={c}: non-English harmful {fig} | cross-fitted {crossed}", file=log)
        if best is None or crossed["f1"] > best[1]:
            best = (c, crossed["f1"], t)
    assert best is not None
    c, _, thresholds = best
    w, bias = _fit_all(first, labels, every, c)
    weights = MultilingualWeights(HEADS, WINDOW_WORDS, w, bias, thresholds, GATED)
    weights.save(out)
    print(f"chose C={c}; wrote {out} ({out.stat().st_size / 1e3:.0f} kB)", file=log)
    return weights


def _cross_fitted(
    labels: npt.NDArray[np.int8], oof: F32, foreign: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]
) -> dict[str, float]:
    half = np.random.default_rng(SEED).permutation(len(labels)) % 2
    pred = np.zeros(len(labels), dtype=np.bool_)
    for side in (0, 1):
        t = choose_thresholds(labels, oof, np.flatnonzero(half == side).astype(np.int64), foreign)
        rows = np.flatnonzero(half != side)
        pred[rows] = harmful(oof[rows], t)
    return prf(truth[foreign], pred[foreign])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    train(args.data, args.out or default_weights_path())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
