"""Moderation benchmark: the shipped classifier vs the one it replaced vs ``alt-profanity-check``.

Usage::

    python bench/moderation.py [--data /work/shared/data/moderation-dev.jsonl] [--runs 300]
                               [--skip-latency] [--threads 2] [--parallel windows|operators]
                               [--spinning] [--output PATH]

Evaluates the three systems in one run on exactly the held-out part defined by
``alize.safety.dataset.split_indices`` (the part neither ``python -m alize.safety.finetune`` nor
``python -m alize.safety.train`` reads):

* ``alize``: the shipped two-stage classifier (fine-tuned MiniLM as int8 ONNX for English text,
  USE multilingual for the rest; :mod:`alize.safety.staged`), through the whole moderation path;
* ``alize-ngram``: the classifier it replaced (MiniLM embedding layer + hashed n-grams,
  :mod:`alize.safety.classifier`), still installed under that name;
* ``alt-profanity-check``: flags when ``predict_prob >= 0.5``.

For each: F1 of "flagged" (truth = any known label is 1; prediction = any of the eight labelled
OpenAI categories), per-category precision / recall / F1 (rows whose label is known) with the
head's threshold, the false-positive rate of each threshold preset
(:data:`alize.safety.policy.PRESETS`), and latency p50 / p99 of one call on a single 200-word
text (held-out texts cut or repeated to 200 words), with the process's CPU time per call (all
threads: the work, which the machine's other processes inflate less than wall-clock time). The
shipped model's cross-validated figures (``meta.json``, chosen without the held-out part) are
printed beside its held-out ones.

``--threads``, ``--parallel`` and ``--spinning`` set the English stage (threads per call, 2 by
default as shipped; whether they share a call's windows, as shipped, or each window's operators
as onnxruntime intra-op threads; whether onnxruntime's threads spin-wait between operators, off
as shipped), so a run can be reproduced with the options it was measured with; all three are
recorded in the JSON.

Writes ``bench/results/moderation.json`` (or ``--output``) with the machine's CPU, instruction
sets (int8 kernels differ with and without VNNI) and load average at the start and the end, and
prints markdown tables. Texts are never printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))

from _common import machine_info, percentile_or_zero  # noqa: E402
from alize.safety.categories import OPENAI_TO_HEAD  # noqa: E402
from alize.safety.dataset import LABEL_CODES, LabelledText, load_dev, split_indices  # noqa: E402
from alize.safety.minilm import default_model_dir  # noqa: E402
from alize.safety.moderator import ModerationResult, Moderator, create_moderator, create_ngram_moderator  # noqa: E402
from alize.safety.policy import PRESETS  # noqa: E402

DEFAULT_DATA = Path("/work/shared/data/moderation-dev.jsonl")
CODE_TO_OPENAI = {
    code: name for name, code in OPENAI_TO_HEAD.items() if code in LABEL_CODES and "/intent" not in name
}


def prf(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, float | int]:
    tp = sum(t and p for t, p in zip(truth, pred, strict=True))
    fp = sum(p and not t for t, p in zip(truth, pred, strict=True))
    fn = sum(t and not p for t, p in zip(truth, pred, strict=True))
    negatives = sum(not t for t in truth)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "false_positive_rate": round(fp / negatives, 4) if negatives else 0.0,
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
    cpu_start = time.process_time()
    for i in range(runs):
        start = time.perf_counter()
        fn(texts[i % len(texts)])
        timings.append((time.perf_counter() - start) * 1000.0)
    cpu_ms = (time.process_time() - cpu_start) * 1000.0
    return {
        "p50_ms": round(percentile_or_zero(timings, 50), 3),
        "p99_ms": round(percentile_or_zero(timings, 99), 3),
        "mean_ms": round(statistics.fmean(timings), 3),
        # CPU time of the whole process (all its threads) per call: the work done, which other
        # processes on the machine do not inflate the way they inflate wall-clock time
        "cpu_ms_per_call": round(cpu_ms / runs, 3) if runs else 0.0,
        "runs": runs,
    }


def evaluate(held: Sequence[LabelledText], results: Sequence[ModerationResult]) -> dict[str, Any]:
    truth = [r.flagged for r in held]
    categories: dict[str, Any] = {}
    for code, name in CODE_TO_OPENAI.items():
        pairs = [
            (r.labels[code] == 1, res.openai_categories[name])
            for r, res in zip(held, results, strict=True)
            if code in r.labels
        ]
        categories[name] = prf([t for t, _ in pairs], [p for _, p in pairs])
    names = list(CODE_TO_OPENAI.values())
    presets = {
        preset: prf(truth, [max(res.openai_scores[n] for n in names) >= level for res in results])
        | {"level": level}
        for preset, level in PRESETS.items()
    }
    return {
        "flagged": prf(truth, [any(res.openai_categories[n] for n in names) for res in results]),
        "flagged_all_categories": prf(truth, [res.openai_flagged for res in results]),
        "categories": categories,
        "presets": presets,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moderation benchmark")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--skip-latency", action="store_true", help="quality figures only")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "moderation.json")
    parser.add_argument("--threads", type=int, default=2, help="English stage: threads per call")
    parser.add_argument(
        "--parallel",
        choices=("windows", "operators"),
        default="windows",
        help="English stage: the threads share a call's windows or each window's operators",
    )
    parser.add_argument(
        "--spinning", action="store_true", help="English stage: let onnxruntime's threads spin-wait"
    )
    args = parser.parse_args(argv)
    machine = machine_info()

    rows = load_dev(args.data)
    _, test_idx = split_indices(rows)
    held = [rows[i] for i in test_idx]
    texts = [r.text for r in held]
    bench_texts = words_200(texts)
    meta = json.loads((default_model_dir() / "meta.json").read_text(encoding="utf-8"))

    systems: dict[str, Any] = {}
    moderators: dict[str, Moderator] = {
        "alize": create_moderator(threads=args.threads, spinning=args.spinning, parallel=args.parallel),
        "alize-ngram": create_ngram_moderator(),
    }
    for name, moderator in moderators.items():
        started = time.perf_counter()
        results = moderator.classify(texts)
        report = evaluate(held, results) | {
            "batch_texts_per_s": round(len(texts) / (time.perf_counter() - started), 1)
        }
        if not args.skip_latency:
            report["latency_200_words"] = latency(
                lambda t, m=moderator: m.classify([t]), bench_texts, args.runs
            )
            report["latency_200_words_classifier_only"] = latency(
                lambda t, m=moderator: m.classifier.scores([t]), bench_texts, args.runs
            )
        systems[name] = report
    staged: Any = moderators["alize"].classifier
    systems["alize"]["cross_validated_flagged"] = meta["cv_flagged"]
    systems["alize"]["thresholds"] = meta["thresholds"]
    systems["alize"]["stages_of_held_out_texts"] = {
        s: staged.stages(texts).count(s) for s in ("english", "multilingual", "both")
    }
    if not args.skip_latency:
        systems["alize"]["latency_200_words_english_stage"] = latency(
            lambda t: staged.english.scores([t]), bench_texts, args.runs
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from profanity_check import predict_prob

        prof = [float(p) for p in predict_prob(texts)]
        systems["alt-profanity-check"] = {"flagged": prf([r.flagged for r in held], [p >= 0.5 for p in prof])}
        if not args.skip_latency:
            systems["alt-profanity-check"]["latency_200_words"] = latency(
                lambda t: predict_prob([t]), bench_texts, args.runs
            )

    machine["loadavg_at_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    report = {
        "options": {
            "runs": args.runs,
            "threads": args.threads,
            "parallel": args.parallel,
            "spinning": args.spinning,
        },
        "dataset": {
            "path": str(args.data),
            "held_out_rows": len(held),
            "held_out_flagged": sum(r.flagged for r in held),
        },
        "systems": systems,
        "machine": machine,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_tables(report)
    print(f"\nwrote {args.output}")
    return 0


def print_tables(report: dict[str, Any]) -> None:
    d, systems, machine = report["dataset"], report["systems"], report["machine"]
    print(f"held-out rows: {d['held_out_rows']} ({d['held_out_flagged']} flagged); {machine['cpu_model']}")
    load = f"{machine['loadavg_at_start']} -> {machine['loadavg_at_end']}"
    print(f"instruction sets: {machine['cpu_flags']}; load average {load}")
    print("\n| system | flagged P | flagged R | flagged F1 | p50 ms (200 words) | p99 ms | CPU ms / call |")
    print("|---|---|---|---|---|---|---|")
    for name, s in systems.items():
        f, lat = s["flagged"], s.get("latency_200_words", {})
        p50, p99, cpu = lat.get("p50_ms", "-"), lat.get("p99_ms", "-"), lat.get("cpu_ms_per_call", "-")
        print(f"| {name} | {f['precision']} | {f['recall']} | {f['f1']} | {p50} | {p99} | {cpu} |")
    cv = systems["alize"]["cross_validated_flagged"]["cross_fitted"]
    print(f"\nalize, 5-fold CV (cross-fitted): P {cv['precision']} R {cv['recall']} F1 {cv['f1']}")
    print("\n| category (alize) | threshold | precision | recall | F1 | positives |")
    print("|---|---|---|---|---|---|")
    for name, c in systems["alize"]["categories"].items():
        threshold = systems["alize"]["thresholds"][OPENAI_TO_HEAD[name]]
        figures = f"{c['precision']} | {c['recall']} | {c['f1']} | {c['support']}"
        print(f"| {name} | {threshold:.2f} | {figures} |")
    print("\n| preset (alize) | level | flagged P | flagged R | false-positive rate |")
    print("|---|---|---|---|---|")
    for name, p in systems["alize"]["presets"].items():
        print(f"| {name} | {p['level']} | {p['precision']} | {p['recall']} | {p['false_positive_rate']} |")


if __name__ == "__main__":
    raise SystemExit(main())
