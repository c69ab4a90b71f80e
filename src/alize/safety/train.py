"""Train the content classifier and rewrite ``alize/safety/data/classifier.npz``.

Usage::

    python -m alize.safety.train [--data shared/data/moderation-dev.jsonl] [--out PATH]

What it does, deterministically (fixed seeds, no randomness left to the solver):

1. Loads the dev set and keeps only the *training* part of the split defined in
   :mod:`alize.safety.dataset` (the held-out 30 % is never read here), plus Alizé's own
   hand-written examples in ``alize/safety/data/extra.jsonl``: advice requests for health /
   financial / law, requests for dangerous or criminal help, examples of each dev-set category
   (self-harm, threats, graphic violence, hate, harassment, sexual content) and tricky benign
   texts (news, history, medicine, sex education, profanity aimed at nobody).
2. Builds the label matrix, one column per head, ``-1`` for unknown. Dev rows are taken as
   negatives for health / financial / law (the dev set holds no advice requests) and for
   ``dangerous`` unless they are flagged for something else (then unknown).
3. For every head, fits two class-balanced logistic regressions on the rows whose label is
   known: one on the standardised MiniLM embedding-layer features, one on hashed n-grams.
   A ninth head, ``any``, learns "flagged for anything".
4. Chooses each head's threshold (maximum F1) on 5-fold out-of-fold predictions computed the
   way inference computes them: every held-out-of-fold text is cut into ``WINDOW_WORDS``-word
   windows and takes the maximum over its windows, and prints the out-of-fold "flagged" F1 of
   the plain union of the eight dev heads and of the heads gated by ``any`` (the shipped form,
   see :mod:`alize.safety.classifier`). Every choice is made without the held-out part.

Needs scikit-learn and scipy (training only; inference is numpy).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from alize.safety.calibration import GATE_HEAD
from alize.safety.categories import DEV_HEADS, HEADS
from alize.safety.classifier import ClassifierWeights, default_weights_path, split_windows
from alize.safety.dataset import LabelledText, load_dev, split_indices
from alize.safety.encoder import MiniLMEncoder
from alize.safety.ngrams import ngram_buckets, sparse_tfidf

F32 = npt.NDArray[np.float32]
SEED = 0
NUM_LAYERS = 0
MAX_TOKENS = 256
WINDOW_WORDS = 200
BUCKETS = 1 << 17
C_DENSE = 0.03
C_NGRAM = 10.0
FOLDS = 5
DEFAULT_DATA = Path("/work/shared/data/moderation-dev.jsonl")


def _training_module(name: str) -> Any:
    """Import a training-only dependency (scikit-learn, scipy) by name.

    They are not runtime dependencies of Alizé and ship no type stubs, so they are imported
    dynamically: mypy then checks this module the same way whether or not they are installed.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SystemExit(f"training needs {name.split('.')[0]}: pip install scikit-learn") from exc


def extra_examples() -> list[tuple[str, dict[str, int]]]:
    """Alizé's own labelled examples shipped with the package."""
    path = resources.files("alize.safety").joinpath("data", "extra.jsonl")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            rows.append((str(raw["text"]), {str(k): int(v) for k, v in raw["labels"].items()}))
    return rows


def label_matrix(
    dev: Sequence[LabelledText], extra: Sequence[tuple[str, dict[str, int]]]
) -> npt.NDArray[np.int8]:
    """(rows, heads) with 1 / 0 / -1 (unknown); dev rows first, then the extra examples.

    An extra example may set ``"any": -1`` to stay out of the gate head: benign how-to requests
    that teach the ``dangerous`` head what is *not* dangerous ("explain step by step how bread
    rises") without shifting the gate, which is selected on the dev set's "flagged".
    """
    y = np.full((len(dev) + len(extra), len(HEADS)), -1, dtype=np.int8)
    for i, row in enumerate(dev):
        for j, head in enumerate(HEADS):
            if head in row.labels:
                y[i, j] = row.labels[head]
            elif head == "any":
                y[i, j] = int(row.flagged)
            elif head in ("health", "financial", "law") or (head == "dangerous" and not row.flagged):
                y[i, j] = 0
    for k, (_, labels) in enumerate(extra):
        # "any" = harmful in some way: dangerous or one of the dev-set categories
        y[len(dev) + k, HEADS.index("any")] = max(labels.get(h, 0) for h in ("dangerous", *DEV_HEADS))
        for j, head in enumerate(HEADS):
            if head in labels:
                y[len(dev) + k, j] = labels[head]
    return y


def ngram_matrix(texts: Sequence[str]) -> tuple[Any, F32]:
    """CSR matrix of the texts' tf-idf n-gram vectors, and the IDF (smoothed, as scikit-learn's)."""
    sparse = _training_module("scipy.sparse")

    counts = [ngram_buckets(t, BUCKETS) for t in texts]
    df = np.zeros(BUCKETS, dtype=np.float64)
    for idx, _ in counts:
        df[idx] += 1.0
    idf = (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32)
    # the file stores float16: train on the rounded values inference will see
    idf = idf.astype(np.float16).astype(np.float32)
    rows, cols, vals = [], [], []
    for r, (idx, cnt) in enumerate(counts):
        v = (1.0 + np.log(cnt.astype(np.float32))) * idf[idx]
        norm = float(np.linalg.norm(v)) or 1.0
        rows.extend([r] * len(idx))
        cols.extend(idx.tolist())
        vals.extend((v / norm).tolist())
    matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), BUCKETS), dtype=np.float32)
    return matrix, idf


def tfidf_matrix(texts: Sequence[str], idf: F32) -> Any:
    """CSR matrix of :func:`alize.safety.ngrams.sparse_tfidf` vectors (inference's own function)."""
    sparse = _training_module("scipy.sparse")
    rows = [sparse_tfidf(t, BUCKETS, idf) for t in texts]
    indptr = np.cumsum([0] + [len(i) for i, _ in rows])
    indices = np.concatenate([i for i, _ in rows]) if rows else np.zeros(0, dtype=np.int64)
    values = np.concatenate([v for _, v in rows]) if rows else np.zeros(0, dtype=np.float32)
    return sparse.csr_matrix((values, indices, indptr), shape=(len(texts), BUCKETS), dtype=np.float32)


def _fit(x: Any, y: npt.NDArray[np.int8], c: float) -> tuple[F32, float]:
    linear_model = _training_module("sklearn.linear_model")
    model = linear_model.LogisticRegression(C=c, max_iter=5000, class_weight="balanced", random_state=SEED)
    model.fit(x, y)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
    return out


def _calibrate(p: npt.NDArray[np.float64], t: F32) -> npt.NDArray[np.float64]:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return _sigmoid(np.log(q / (1 - q)) - np.log(t / (1 - t)))


def _best_threshold(y: npt.NDArray[np.int8], p: npt.NDArray[np.float64]) -> tuple[float, float]:
    best = (0.5, -1.0)
    for t in np.round(np.arange(0.1, 0.91, 0.025), 3):
        pred = p >= t
        tp = float(np.sum(pred & (y == 1)))
        denom = float(np.sum(pred)) + float(np.sum(y == 1))
        f1 = 2 * tp / denom if denom else 0.0
        if f1 > best[1]:
            best = (float(t), f1)
    return best


def _f1(truth: npt.NDArray[np.bool_], pred: npt.NDArray[np.bool_]) -> float:
    return 2 * int(np.sum(pred & truth)) / max(int(pred.sum()) + int(truth.sum()), 1)


def _flagged_f1(calibrated: npt.NDArray[np.float64], truth: npt.NDArray[np.bool_], gate: bool) -> float:
    """Out-of-fold "flagged" F1 of the eight dev heads, with or without the "any" gate."""
    dev_cols = [HEADS.index(h) for h in DEV_HEADS]
    heads = np.nan_to_num(calibrated[:, dev_cols], nan=0.0)
    if gate:
        heads = np.sqrt(heads * calibrated[:, [HEADS.index(GATE_HEAD)]])
    return _f1(truth, heads.max(axis=1) >= 0.5)


def train(data: Path, out: Path, log: Any = sys.stdout, oof_out: Path | None = None) -> ClassifierWeights:
    """Fit every head, choose thresholds and gating out-of-fold, save and return the weights.

    ``oof_out``: also write the out-of-fold averaged probabilities (rows as in
    :func:`alize.safety.finetune.load_corpus`: the dev training part, then the extra examples),
    which :mod:`alize.safety.finetune_select` combines with the fine-tuned model's.
    """
    model_selection = _training_module("sklearn.model_selection")
    dev_all = load_dev(data)
    train_idx, _ = split_indices(dev_all)
    dev = [dev_all[i] for i in train_idx]
    extra = extra_examples()
    texts = [r.text for r in dev] + [t for t, _ in extra]
    y = label_matrix(dev, extra)

    encoder = MiniLMEncoder(num_layers=NUM_LAYERS, max_tokens=MAX_TOKENS)

    def embed(batch: Sequence[str]) -> F32:
        return np.concatenate([encoder.encode(list(batch[i : i + 64])) for i in range(0, len(batch), 64)])

    dense = embed(texts)
    mean = dense.mean(axis=0)
    scale = dense.std(axis=0) + 1e-6
    dense_std = (dense - mean) / scale
    grams, idf = ngram_matrix(texts)
    # the windows inference scores: out-of-fold predictions take the max over them, like scores()
    windows, owner_list = split_windows(texts, WINDOW_WORDS)
    owners = np.array(owner_list, dtype=np.int64)
    win_dense = (embed(windows) - mean) / scale
    win_grams = tfidf_matrix(windows, idf)

    heads = len(HEADS)
    dense_w = np.zeros((dense.shape[1], heads), dtype=np.float32)
    dense_b = np.zeros(heads, dtype=np.float32)
    ngram_w = np.zeros((BUCKETS, heads), dtype=np.float32)
    ngram_b = np.zeros(heads, dtype=np.float32)
    thresholds = np.full(heads, 0.5, dtype=np.float32)
    oof = np.full((len(texts), heads), np.nan)
    for j, head in enumerate(HEADS):
        known = np.flatnonzero(y[:, j] >= 0)
        yk = y[known, j]
        dense_w[:, j], dense_b[j] = _fit(dense_std[known], yk, C_DENSE)
        coef, ngram_b[j] = _fit(grams[known], yk, C_NGRAM)
        ngram_w[:, j] = coef.astype(np.float16).astype(np.float32)
        folds = model_selection.StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
        # rows with no label for this head are never trained on; each fold predicts a fifth of
        # them, so every row has an out-of-fold probability for every head
        unknown = np.flatnonzero(y[:, j] < 0)
        for k, (a, b) in enumerate(folds.split(known, yk)):
            wd, bd = _fit(dense_std[known[a]], yk[a], C_DENSE)
            wn, bn = _fit(grams[known[a]], yk[a], C_NGRAM)
            scored = np.concatenate([known[b], unknown[k::FOLDS]])
            rows = np.flatnonzero(np.isin(owners, scored))
            pd = _sigmoid(win_dense[rows] @ wd + bd)
            pn = _sigmoid(np.asarray(win_grams[rows] @ wn).ravel() + bn)
            best = np.full(len(texts), -1.0)
            np.maximum.at(best, owners[rows], 0.5 * (pd + pn))
            oof[scored, j] = best[scored]
        thresholds[j], f1 = _best_threshold(yk, oof[known, j])
        print(
            f"head {head:10s} known={len(known):4d} pos={int(yk.sum()):4d} "
            f"thr={thresholds[j]:.3f} oof_f1={f1:.3f}",
            file=log,
        )

    n_dev = len(dev)
    flagged_true = np.array([r.flagged for r in dev])
    calibrated = _calibrate(oof[:n_dev], thresholds)
    f1_union = _flagged_f1(calibrated, flagged_true, gate=False)
    f1_gated = _flagged_f1(calibrated, flagged_true, gate=True)
    print(f"out-of-fold flagged F1, union of the dev heads: {f1_union:.3f}", file=log)
    print(f"out-of-fold flagged F1, dev heads gated by '{GATE_HEAD}' (shipped): {f1_gated:.3f}", file=log)
    gated = np.array([h in DEV_HEADS for h in HEADS])

    weights = ClassifierWeights(
        heads=HEADS,
        num_layers=NUM_LAYERS,
        max_tokens=MAX_TOKENS,
        window_words=WINDOW_WORDS,
        buckets=BUCKETS,
        dense_mean=mean.astype(np.float32),
        dense_scale=scale.astype(np.float32),
        dense_w=dense_w,
        dense_b=dense_b,
        ngram_w=ngram_w,
        ngram_b=ngram_b,
        idf=idf,
        thresholds=thresholds,
        gated=gated,
    )
    weights.save(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", file=log)
    if oof_out is not None:
        np.savez(oof_out, oof=oof.astype(np.float32), labels=y, n_dev=np.array(n_dev))
        print(f"wrote {oof_out}", file=log)
    return weights


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="moderation-dev.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the packaged one)")
    parser.add_argument(
        "--oof", type=Path, default=None, help="also write the out-of-fold probabilities here (.npz)"
    )
    args = parser.parse_args(argv)
    train(args.data, args.out or default_weights_path(), oof_out=args.oof)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
