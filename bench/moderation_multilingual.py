"""Multilingual probe: how the shipped classifier treats French, German, Spanish and Italian text.

Usage::

    python bench/moderation_multilingual.py [--ngram] [--weights PATH] [--output PATH]

``--ngram`` measures the previous classifier (``alize-ngram``, an ``.npz`` for ``--weights``)
instead of the shipped two-stage one (``--weights``: the English stage's model directory).

Reads ``tests/safety/data/multilingual_probe.jsonl`` (hand-written sentences, 25 benign and 15
harmful per language; none of them is ever used for training) and reports, per language and
overall, the benign false-positive rate and the harmful recall of the classifier. A text counts
as flagged when any of the harm categories below is ``True`` in Mistral's names; the advice
categories (health, financial, law) and PII are not harm and are left out, so a benign health
question is benign here.

Writes ``bench/results/moderation_multilingual.json`` and prints a markdown table. With 25 / 15
sentences per language one text moves a rate by 0.04 / 0.07: read the overall row first.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "src"))

from alize.safety.categories import HARM_CATEGORIES  # noqa: E402
from alize.safety.moderator import create_moderator, create_ngram_moderator  # noqa: E402

PROBE = ROOT / "tests" / "safety" / "data" / "multilingual_probe.jsonl"
LANGS = ("fr", "de", "es", "it")


def load_probe(path: Path = PROBE) -> list[dict[str, Any]]:
    """The probe rows: ``{"lang", "text", "harmful", "category"}``."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def flagged(texts: Sequence[str], weights: Path | None = None, ngram: bool = False) -> list[bool]:
    """Whether each text is flagged for one of :data:`HARM_CATEGORIES`."""
    factory = create_ngram_moderator if ngram else create_moderator
    results = factory(weights).classify(list(texts))
    return [res.harmful for res in results]


def summarise(rows: Sequence[dict[str, Any]], pred: Sequence[bool]) -> dict[str, dict[str, float | int]]:
    """Per language and overall: benign flagged / total, harmful caught / total, and the rates."""
    out: dict[str, dict[str, float | int]] = {}
    for lang in (*LANGS, "all"):
        pairs = [(r, p) for r, p in zip(rows, pred, strict=True) if lang in ("all", r["lang"])]
        benign = [p for r, p in pairs if not r["harmful"]]
        harmful = [p for r, p in pairs if r["harmful"]]
        out[lang] = {
            "benign": len(benign),
            "benign_flagged": sum(benign),
            "benign_fpr": round(sum(benign) / max(len(benign), 1), 4),
            "harmful": len(harmful),
            "harmful_caught": sum(harmful),
            "harmful_recall": round(sum(harmful) / max(len(harmful), 1), 4),
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--weights", type=Path, default=None, help="weights (default: the packaged ones)")
    parser.add_argument("--ngram", action="store_true", help="the previous classifier (alize-ngram)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "moderation_multilingual.json")
    args = parser.parse_args(argv)

    rows = load_probe()
    pred = flagged([r["text"] for r in rows], args.weights, args.ngram)
    table = summarise(rows, pred)
    missed = {c: 0 for c in HARM_CATEGORIES}
    for r, p in zip(rows, pred, strict=True):
        if r["harmful"] and not p:
            missed[r["category"]] += 1
    report = {
        "probe": str(PROBE.relative_to(ROOT)),
        "classifier": "alize-ngram" if args.ngram else "alize",
        "weights": str(args.weights) if args.weights else "packaged",
        "flagged_means_any_of": list(HARM_CATEGORIES),
        "per_language": table,
        "harmful_missed_by_category": missed,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print("| language | benign flagged | benign FP rate | harmful caught | harmful recall |")
    print("|---|---|---|---|---|")
    for lang, s in table.items():
        print(
            f"| {lang} | {s['benign_flagged']}/{s['benign']} | {s['benign_fpr']:.2f} "
            f"| {s['harmful_caught']}/{s['harmful']} | {s['harmful_recall']:.2f} |"
        )
    print(f"harmful missed by category: {missed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
