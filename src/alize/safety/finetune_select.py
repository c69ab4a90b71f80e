"""Choices made on out-of-fold predictions: epochs, per-head thresholds, gating.

Usage::

    python -m alize.safety.finetune_select [--cv /tmp/alize-finetune/cv.npz] [--ngram-oof PATH]

Reads the out-of-fold predictions that ``python -m alize.safety.finetune cv`` wrote (one set per
evaluated epoch) and, with ``--ngram-oof``, the n-gram model's out-of-fold predictions on the
same rows (``python -m alize.safety.train --oof PATH``), and for each epoch, each weight of the
n-gram model in the blend (:data:`NGRAM_WEIGHTS`, :func:`blend`) and with or without a common
shift of the dev heads' thresholds (:func:`tuned`):

* chooses each head's threshold (maximum F1 over its rows with a known label);
* computes "flagged" F1 on the dev rows (the eight dev-set heads, union or gated by ``any``),
  with thresholds chosen on the same predictions (optimistic) and **cross-fitted** (thresholds
  chosen on one half of the rows, scored on the other half, both ways), the figure choices are
  made on;
* measures the benign false-positive rate of the threshold presets
  (:data:`alize.safety.policy.PRESETS`).

The candidate with the best cross-fitted "flagged" F1 is chosen. Writes ``selection.json``
beside the predictions: the chosen epoch, n-gram weight and gating, the thresholds, the figures.
:mod:`alize.safety.export` puts them in the shipped model's ``meta.json``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from alize.safety.calibration import GATE_HEAD, calibrate
from alize.safety.categories import DEV_HEADS, HEADS
from alize.safety.policy import PRESETS

F32 = npt.NDArray[np.float32]
GRID = np.round(np.arange(0.02, 0.981, 0.02), 3)
SEED = 0


def best_threshold(y: npt.NDArray[np.int8], p: F32) -> tuple[float, float]:
    """(threshold, F1) maximising F1 of ``p >= threshold`` against ``y`` (ties: the lowest)."""
    best = (0.5, -1.0)
    positives = float(np.sum(y == 1))
    for t in GRID:
        pred = p >= t
        denom = float(pred.sum()) + positives
        f1 = 2.0 * float(np.sum(pred & (y == 1))) / denom if denom else 0.0
        if f1 > best[1] + 1e-12:
            best = (float(t), f1)
    return best


def thresholds_for(labels: npt.NDArray[np.int8], probs: F32, rows: npt.NDArray[np.int64]) -> F32:
    out = np.full(len(HEADS), 0.5, dtype=np.float32)
    for j in range(len(HEADS)):
        known = rows[labels[rows, j] >= 0]
        if known.size and (labels[known, j] == 1).any():
            out[j] = best_threshold(labels[known, j], probs[known, j])[0]
    return out


def flagged(probs: F32, thresholds: F32, gate: bool, level: float = 0.5) -> npt.NDArray[np.bool_]:
    """Any of the eight dev-set heads at or over ``level`` after calibration."""
    gated = np.array([h in DEV_HEADS for h in HEADS]) if gate else np.zeros(len(HEADS), dtype=np.bool_)
    scores = calibrate(probs, thresholds, gated, HEADS.index(GATE_HEAD) if gate else None)
    dev_cols = [HEADS.index(h) for h in DEV_HEADS]
    result: npt.NDArray[np.bool_] = scores[:, dev_cols].max(axis=1) >= level
    return result


def prf(truth: npt.NDArray[np.bool_], pred: npt.NDArray[np.bool_]) -> dict[str, float]:
    tp = float(np.sum(truth & pred))
    p = tp / max(float(pred.sum()), 1.0)
    r = tp / max(float(truth.sum()), 1.0)
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
        "fpr": round(float(np.sum(pred & ~truth)) / max(float((~truth).sum()), 1.0), 4),
    }


#: shifts (in logit units) of the dev heads' and the gate's thresholds tried by :func:`tuned`
SHIFTS = np.round(np.arange(-1.0, 1.01, 0.1), 2)


def tuned(
    labels: npt.NDArray[np.int8], probs: F32, rows: npt.NDArray[np.int64], n_dev: int, gate: bool, shift: bool
) -> F32:
    """Per-head thresholds (:func:`thresholds_for`) on ``rows``; with ``shift``, the eight dev
    heads' and the gate's then moved together by the logit shift that maximises "flagged" F1 on
    the dev rows among ``rows`` (per-head F1 is not the "flagged" decision's F1)."""
    t = thresholds_for(labels, probs, rows)
    if not shift:
        return t
    moved = np.array([h in DEV_HEADS or h == GATE_HEAD for h in HEADS])
    dev_rows = rows[rows < n_dev]
    truth = (labels[dev_rows, :8] == 1).any(axis=1)
    best = (-1.0, t)
    for s in SHIFTS:
        candidate = t.copy()
        candidate[moved] = 1.0 / (1.0 + np.exp(-(np.log(t[moved] / (1.0 - t[moved])) + s)))
        f1 = prf(truth, flagged(probs[dev_rows], candidate, gate))["f1"]
        if f1 > best[0] + 1e-9 or (abs(f1 - best[0]) <= 1e-9 and abs(s) < 1e-9):
            best = (f1, candidate)
    return best[1]


def cross_fitted(
    labels: npt.NDArray[np.int8], probs: F32, n_dev: int, gate: bool, shift: bool = False
) -> npt.NDArray[np.bool_]:
    """Flagged predictions on the dev rows, each half scored with thresholds from the other."""
    rng = np.random.default_rng(SEED)
    half = rng.permutation(len(labels)) % 2
    pred = np.zeros(n_dev, dtype=np.bool_)
    for side in (0, 1):
        fit_rows = np.flatnonzero(half == side).astype(np.int64)
        score_rows = np.flatnonzero(half[:n_dev] != side)
        t = tuned(labels, probs, fit_rows, n_dev, gate, shift)
        pred[score_rows] = flagged(probs[score_rows], t, gate)
    return pred


#: candidate weights of the n-gram model (:mod:`alize.safety.classifier`) in the English stage's
#: blend of head probabilities; 0 is the fine-tuned MiniLM alone
NGRAM_WEIGHTS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)


def blend(minilm: F32, ngram: F32 | None, weight: float) -> F32:
    """The English stage's head probabilities: ``(1 - weight) * minilm + weight * ngram``."""
    if ngram is None or weight == 0.0:
        return minilm
    out: F32 = ((1.0 - weight) * minilm + weight * ngram).astype(np.float32)
    return out


def select(cv: Path, ngram_oof: Path | None = None) -> dict[str, Any]:
    """Choose epochs, n-gram weight and gating on cross-fitted flagged F1; thresholds for them.

    ``ngram_oof``: the n-gram model's out-of-fold probabilities on the same rows
    (``python -m alize.safety.train --oof``); without it only the MiniLM alone is considered.
    """
    data = np.load(cv)
    # only the rows of the folds already done (all of them once cv has finished)
    done = ~np.isnan(data[sorted(k for k in data.files if k.startswith("oof_e"))[-1]]).any(axis=1)
    all_labels = data["labels"].astype(np.int8)
    n_dev = int(done[: int(data["n_dev"])].sum())
    order = np.concatenate(
        [
            np.flatnonzero(done[: int(data["n_dev"])]),
            np.flatnonzero(done[int(data["n_dev"]) :]) + int(data["n_dev"]),
        ]
    )
    ngram: F32 | None = None
    if ngram_oof is not None:
        other = np.load(ngram_oof)
        if not np.array_equal(other["labels"], all_labels):
            raise SystemExit(f"{ngram_oof} was computed on other rows than {cv}")
        ngram = other["oof"].astype(np.float32)[order]
        if np.isnan(ngram).any():
            raise SystemExit(f"{ngram_oof} lacks a probability for some rows")
    labels = all_labels[order]
    truth = (labels[:n_dev, :8] == 1).any(axis=1)
    every = np.arange(len(labels), dtype=np.int64)
    weights = NGRAM_WEIGHTS if ngram is not None else (0.0,)
    table: dict[str, Any] = {}
    for key in sorted(k for k in data.files if k.startswith("oof_e")):
        minilm = data[key].astype(np.float32)[order]
        if np.isnan(minilm).any():
            continue
        for weight in weights:
            probs = blend(minilm, ngram, weight)
            for shift in (False, True):
                row: dict[str, Any] = {
                    "epochs": int(key.removeprefix("oof_e")),
                    "ngram_weight": weight,
                    "shift": shift,
                }
                for use_gate in (False, True):
                    t = tuned(labels, probs, every, n_dev, use_gate, shift)
                    row["gated" if use_gate else "union"] = {
                        "oof": prf(truth, flagged(probs[:n_dev], t, use_gate)),
                        "cross_fitted": prf(truth, cross_fitted(labels, probs, n_dev, use_gate, shift)),
                        "thresholds": {h: float(v) for h, v in zip(HEADS, t, strict=True)},
                    }
                table[f"e{row['epochs']} ngram {weight}{' shift' if shift else ''}"] = row
    if not table:
        raise SystemExit(f"{cv} holds no complete out-of-fold predictions")
    name, gate = max(
        ((n, g) for n in table for g in ("union", "gated")),
        key=lambda ng: (table[ng[0]][ng[1]]["cross_fitted"]["f1"], ng[1] == "gated"),
    )
    chosen = table[name]
    probs = blend(data[f"oof_e{chosen['epochs']}"].astype(np.float32)[order], ngram, chosen["ngram_weight"])
    t = np.array([chosen[gate]["thresholds"][h] for h in HEADS], dtype=np.float32)
    presets = {
        preset: prf(truth, flagged(probs[:n_dev], t, gate == "gated", level)) | {"level": level}
        for preset, level in PRESETS.items()
    }
    return {
        "rows_with_oof": {"dev": n_dev, "all": len(order), "of": len(all_labels)},
        "epochs": chosen["epochs"],
        "ngram_weight": chosen["ngram_weight"],
        "threshold_shift": chosen["shift"],
        "gated": [h for h in DEV_HEADS] if gate == "gated" else [],
        "thresholds": chosen[gate]["thresholds"],
        "cv_flagged": {k: chosen[gate][k] for k in ("oof", "cross_fitted")},
        "presets": presets,
        "per_head_oof": per_head(labels, probs, t),
        "table": {
            n: {g: {k: r[g][k] for k in ("oof", "cross_fitted")} for g in ("union", "gated")}
            for n, r in table.items()
        },
    }


def per_head(labels: npt.NDArray[np.int8], probs: F32, t: F32) -> dict[str, dict[str, float]]:
    """Each head's out-of-fold precision / recall at its threshold (rows with a known label)."""
    out: dict[str, dict[str, float]] = {}
    for j, head in enumerate(HEADS):
        known = labels[:, j] >= 0
        truth = labels[known, j] == 1
        out[head] = prf(truth, probs[known, j] >= t[j]) | {
            "threshold": float(t[j]),
            "positives": int(truth.sum()),
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cv", type=Path, default=Path("/tmp/alize-finetune/cv.npz"))
    parser.add_argument(
        "--ngram-oof",
        type=Path,
        default=None,
        help="the n-gram model's out-of-fold probabilities (python -m alize.safety.train --oof)",
    )
    args = parser.parse_args(argv)
    result = select(args.cv, args.ngram_oof)
    out = args.cv.with_name("selection.json")
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, row in result["table"].items():
        for gate, figures in row.items():
            print(
                f"{name} {gate:5s}: oof F1 {figures['oof']['f1']:.3f}, "
                f"cross-fitted F1 {figures['cross_fitted']['f1']:.3f}"
            )
    print(
        f"chosen: {result['epochs']} epochs, n-gram weight {result['ngram_weight']}, "
        f"{'gated' if result['gated'] else 'union'}; wrote {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
