"""Text task sets for ``alize eval``: translation from English into French, German, Spanish and
Italian (the project's own set, ``evalsets/translation.jsonl``), scored with chrF.

A model with no chat template (a base model) gets the same request as a completion prompt
(``English: ...\nFrench:``, stopped at the end of the line).

chrF is computed as sacreBLEU's default does (Popović 2015): character n-grams of orders 1-6 with
whitespace removed, matches, hypothesis and reference n-gram counts summed over the corpus, the
precision and recall of each order averaged, then ``F_β`` with β = 2 (recall weighs twice), as a
percentage.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

SETS = Path(__file__).resolve().parent / "evalsets"
LANGUAGES = {"fr": "French", "de": "German", "es": "Spanish", "it": "Italian"}
SOURCE = "alize evalsets/translation.jsonl (written for the project, Apache-2.0)"


@dataclass(frozen=True, slots=True)
class Pair:
    id: str
    source: str
    target_lang: str
    reference: str


def translation_pairs(limit: int | None = None) -> list[Pair]:
    rows = [
        json.loads(line) for line in (SETS / "translation.jsonl").read_text().splitlines() if line.strip()
    ]
    pairs = [Pair(r["id"], r["source"], r["target_lang"], r["reference"]) for r in rows]
    return pairs[:limit] if limit else pairs


def _ngrams(text: str, n: int) -> Counter[str]:
    chars = "".join(text.split())
    return Counter(chars[i : i + n] for i in range(len(chars) - n + 1))


def chrf(hypotheses: Sequence[str], references: Sequence[str], *, order: int = 6, beta: float = 2.0) -> float:
    """Corpus chrF in [0, 100]."""
    matches = [0] * order
    hyp_total = [0] * order
    ref_total = [0] * order
    for hyp, ref in zip(hypotheses, references, strict=True):
        for n in range(1, order + 1):
            h, r = _ngrams(hyp, n), _ngrams(ref, n)
            matches[n - 1] += sum((h & r).values())
            hyp_total[n - 1] += sum(h.values())
            ref_total[n - 1] += sum(r.values())
    orders = [n for n in range(order) if ref_total[n] > 0]
    if not orders:
        return 0.0
    precision = sum(matches[n] / hyp_total[n] if hyp_total[n] else 0.0 for n in orders) / len(orders)
    recall = sum(matches[n] / ref_total[n] for n in orders) / len(orders)
    if precision + recall == 0:
        return 0.0
    b2 = beta * beta
    return 100.0 * (1 + b2) * precision * recall / (b2 * precision + recall)


def messages(pair: Pair) -> list[dict[str, str]]:
    language = LANGUAGES[pair.target_lang]
    return [
        {"role": "system", "content": f"Translate the user's text from English into {language}. "
                                      "Reply with the translation only."},
        {"role": "user", "content": pair.source},
    ]  # fmt: skip


def prompt(pair: Pair) -> str:
    """The same request for a base model (no chat template): a few-shot-free completion."""
    return f"English: {pair.source}\n{LANGUAGES[pair.target_lang]}:"


def first_line(text: str) -> str:
    """The translation: the reply's first non-empty line, without surrounding quotes."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip().strip('"“”«» ')
    return ""


async def translate_all(
    client: httpx.AsyncClient,
    model: str,
    pairs: list[Pair],
    *,
    max_tokens: int,
    concurrency: int,
    progress: Callable[[int, int], None],
) -> tuple[list[str], str]:
    """One greedy translation per pair; returns them and the catalog model that answered."""
    gate = asyncio.Semaphore(concurrency)
    answered = model
    done = 0

    chat = True  # until the deployment says it has no chat template (a base model)

    async def one(pair: Pair) -> str:
        nonlocal answered, done, chat
        params = {"model": model, "max_tokens": max_tokens, "temperature": 0}
        async with gate:
            r = (
                await client.post("chat/completions", json={**params, "messages": messages(pair)})
                if chat
                else None
            )
            if r is None or (r.status_code == 400 and r.json()["error"]["code"] == "unsupported_feature"):
                chat = False
                r = await client.post("completions", json={**params, "prompt": prompt(pair), "stop": ["\n"]})
        r.raise_for_status()
        answered = r.headers.get("x-alize-model", answered)
        done += 1
        progress(done, len(pairs))
        choice = r.json()["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        return first_line(str(text or ""))

    return list(await asyncio.gather(*(one(p) for p in pairs))), answered
