"""Moderation benchmark: Alizé's classifier vs ``alt-profanity-check`` on the held-out dev split.

Usage::

    python bench/moderation.py [--data /work/shared/data/moderation-dev.jsonl] [--runs 300]

Evaluates on exactly the held-out part defined by ``alize.safety.dataset.split_indices`` (the
part ``python -m alize.safety.train`` never reads):

* per-category precision / recall / F1 for the eight labelled OpenAI categories, counting only
  rows whose label is known;
* F1 of "flagged": truth = any known label is 1; prediction = any of those eight categories
  flagged (also reported: Alizé's full ``flagged``, which adds the categories the dev set has no
  labels for); ``alt-profanity-check`` flags when ``predict_prob >= 0.5``;
* latency p50 / p99 of one call on a single 200-word text (held-out texts, cut or repeated to
  200 words), for Alizé's whole moderation path (classifier + PII) and for profanity-check.

Writes ``bench/results/moderation.json`` and prints a markdown table. Texts are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))

from _common import percentile_or_zero  # noqa: E402
from alize.safety.categories import OPENAI_TO_HEAD  # noqa: E402
from alize.safety.dataset import LABEL_CODES, load_dev, split_indices  # noqa: E402
from alize.safety.moderator import create_moderator  # noqa: E402

DEFAULT_DATA = Path("/work/shared/data/moderation-dev.jsonl")
CODE_TO_OPENAI = {
    code: name for name, code in OPENAI_TO_HEAD.items() if code in LABEL_CODES and "/intent" not in name
}


def prf(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, float | int]:
    tp = sum(t and p for t, p in zip(truth, pred, strict=True))
    fp = sum(p and not t for t, p in zip(truth, pred, strict=True))
    fn = sum(t and not p for t, p in zip(truth, pred, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "support": tp + fn,
    }


def words_200(texts: Sequence[str]) -> list[str]:
    """Each text cut or repeated to exactly 200 words."""
    out = []
    for text in texts:
        words = text.split() or ["empty"]
        while len(words) < 200:
            words = words + words
        out.append(" ".join(words[:200]))
    return out


def latency(fn: Callable[[str], object], texts: Sequence[str], runs: int) -> dict[str, float]:
    for text in texts[:5]:
        fn(text)  # warm-up: lazy loading, caches
    timings = []
    for i in range(runs):
        start = time.perf_counter()
        fn(texts[i % len(texts)])
        timings.append((time.perf_counter() - start) * 1000.0)
    return {
        "p50_ms": round(percentile_or_zero(timings, 50), 3),
        "p99_ms": round(percentile_or_zero(timings, 99), 3),
        "mean_ms": round(statistics.fmean(timings), 3),
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moderation benchmark")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "moderation.json")
    args = parser.parse_args(argv)

    rows = load_dev(args.data)
    _, test_idx = split_indices(rows)
    held = [rows[i] for i in test_idx]
    texts = [r.text for r in held]
    truth_flagged = [r.flagged for r in held]

    moderator = create_moderator()
    started = time.perf_counter()
    results = moderator.classify(texts)
    batch_s = time.perf_counter() - started

    categories: dict[str, Any] = {}
    for code, name in CODE_TO_OPENAI.items():
        pairs = zip(held, results, strict=True)
        known = [(r.labels[code] == 1, res.openai_categories[name]) for r, res in pairs if code in r.labels]
        categories[name] = prf([t for t, _ in known], [p for _, p in known])
    alize_flagged = [any(res.openai_categories[n] for n in CODE_TO_OPENAI.values()) for res in results]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from profanity_check import predict_prob

        prof = [float(p) for p in predict_prob(texts)]
        baseline_flagged = [p >= 0.5 for p in prof]
        bench_texts = words_200(texts)
        lat_alize = latency(lambda t: moderator.classify([t]), bench_texts, args.runs)
        lat_classifier = latency(lambda t: moderator.classifier.scores([t]), bench_texts, args.runs)
        lat_prof = latency(lambda t: predict_prob([t]), bench_texts, args.runs)

    report: dict[str, Any] = {
        "dataset": {
            "path": str(args.data),
            "held_out_rows": len(held),
            "held_out_flagged": sum(truth_flagged),
        },
        "alize": {
            "flagged": prf(truth_flagged, alize_flagged),
            "flagged_all_categories": prf(truth_flagged, [r.openai_flagged for r in results]),
            "categories": categories,
            "latency_200_words": lat_alize,
            "latency_200_words_classifier_only": lat_classifier,
            "batch_throughput_texts_per_s": round(len(texts) / batch_s, 1),
        },
        "alt_profanity_check": {
            "flagged": prf(truth_flagged, baseline_flagged),
            "latency_200_words": lat_prof,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    a, b = report["alize"], report["alt_profanity_check"]
    load = report["machine"]["load_average_at_end"]
    print(f"held-out rows: {len(held)} ({sum(truth_flagged)} flagged); load average {load}")
    print()
    print("| system | flagged P | flagged R | flagged F1 | p50 ms (200 words) | p99 ms (200 words) |")
    print("|---|---|---|---|---|---|")
    for name, sysrep in (("Alizé", a), ("alt-profanity-check", b)):
        f, lat = sysrep["flagged"], sysrep["latency_200_words"]
        print(
            f"| {name} | {f['precision']} | {f['recall']} | {f['f1']} | {lat['p50_ms']} | {lat['p99_ms']} |"
        )
    print()
    print("| category (Alizé) | precision | recall | F1 | positives |")
    print("|---|---|---|---|---|")
    for name, c in categories.items():
        print(f"| {name} | {c['precision']} | {c['recall']} | {c['f1']} | {c['support']} |")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
