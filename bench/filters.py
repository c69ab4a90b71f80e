"""What content filters cost: the same model served with and without input + output filters.

Usage::

    python bench/filters.py [--concurrency 1,8] [--rounds 4] [--repeats 3] [--max-tokens 128]
                            [--window 16] [--weights PATH] [--output PATH]

Starts one ``alize serve`` with two declared deployments of the packaged SmolLM2 GGUF, identical
but for their safety policy: ``plain`` (no filter) and ``filtered`` (input filter with PII
redaction, output filter with the default rules, checked every ``--window`` tokens). At each
concurrency N, N closed-loop clients each send ``--rounds`` streamed chat requests, and this is
repeated ``--repeats`` times per deployment, the two deployments alternating batch by batch
(plain then filtered, then filtered then plain, ...) so that neither always runs first on a
warmer or quieter machine. Both deployments get the same questions in the same order: a batch
takes the next N x rounds of ``QUESTIONS`` (40 distinct benign questions), each prefixed with a
nonce so nothing is served from the prompt cache.

Per deployment and N, over the repeats: aggregate output tokens/s (usage tokens / batch wall
time) as mean, min and max, TTFT p50/p99 (to the first content chunk: with an output filter that
is the first *released* window), and how many of the replies the filter cut, out of how many
distinct questions. ``filtered / plain`` is the throughput ratio of each pair of batches run
back to back: its spread says how much of a difference is noise.

``--weights PATH`` serves the classifier weights in PATH (``ALIZE_SAFETY__WEIGHTS_PATH``), e.g.
the English-only weights of commit df5327f, to count cuts with them::

    git show df5327f:src/alize/safety/data/classifier.npz > /tmp/english-only.npz
    python bench/filters.py --weights /tmp/english-only.npz --output bench/results/filters-english-only.json

Writes ``bench/results/filters.json`` (or ``--output``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from _common import RESULTS_DIR, ManagedServer, StreamTally, free_port, machine_info, percentile, sse_data

DEPLOYMENTS = ("plain", "filtered")
#: benign questions of the kinds people ask an assistant, none about health, money or law
QUESTIONS = (
    "Describe the river Loire and the towns along it.",
    "Explain how bread rises, step by step.",
    "Write a short letter inviting a colleague to a meeting.",
    "List some advice for a first trip to the Alps.",
    "How do bees make honey?",
    "Summarise the plot of a classic detective novel in a few lines.",
    "What should I pack for a weekend of camping by a lake?",
    "Explain why the sky is blue to a ten-year-old.",
    "Suggest a vegetarian dinner for four people.",
    "How does a bicycle gear system work?",
    "Write a haiku about autumn leaves.",
    "What are good ways to learn a new language as an adult?",
    "Describe the water cycle.",
    "Give me three ideas for a child's birthday party.",
    "How do I repot a houseplant?",
    "Explain what a compiler does.",
    "Write a thank-you note to a neighbour who watered my plants.",
    "What is the difference between weather and climate?",
    "Plan a one-day walking tour of Lyon.",
    "How are rainbows formed?",
    "Suggest a name for a small bakery and explain it.",
    "Explain how a library organises its books.",
    "What games can a family play on a rainy afternoon?",
    "Describe how a sailing boat moves against the wind.",
    "Write a short product description for a wooden chair.",
    "How do I make a simple tomato soup?",
    "Explain the rules of chess in brief.",
    "What are the seasons like in northern Europe?",
    "Give tips for keeping a tidy desk.",
    "How does a train timetable get planned?",
    "Write the opening lines of a story about a lighthouse keeper.",
    "Explain how solar panels turn light into electricity.",
    "Which birds might I see in a city park in spring?",
    "How do I write a clear email to ask for a day off?",
    "Describe the main steps of making cheese.",
    "What is a good routine for learning to play the guitar?",
    "Explain how tides work.",
    "Suggest five books for a summer reading list.",
    "How do I plant tulip bulbs in a garden?",
    "Describe a typical market day in a small French town.",
)


def _env(
    port: int, data_dir: Path, window: int, slots: int, weights: Path | None, classifier: str | None
) -> dict[str, str]:
    filtered = {"input": {"pii": "redact"}, "output": {}, "window_tokens": window}
    deployments = [
        {"name": "plain", "model": "smollm2-135m-instruct", "parallel": slots},
        {"name": "filtered", "model": "smollm2-135m-instruct", "parallel": slots, "safety": filtered},
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env.update(
        ALIZE_PORT=str(port),
        ALIZE_DATA_DIR=str(data_dir),
        ALIZE_DEFAULT_MODEL="plain",
        ALIZE_DEPLOYMENTS=json.dumps(deployments),
        ALIZE_ENGINE__CTX_PER_SLOT="1024",
        ALIZE_CHAT__ENABLED="false",
        ALIZE_SAFETY__WARM_UP="true",
    )
    if weights is not None:
        env["ALIZE_SAFETY__WEIGHTS_PATH"] = str(weights.resolve())
    if classifier is not None:
        env["ALIZE_SAFETY__CLASSIFIER"] = classifier
    return env


async def _one(client: httpx.AsyncClient, model: str, max_tokens: int, question: int) -> dict[str, Any]:
    prompt = f"[{uuid.uuid4().hex[:8]}] {QUESTIONS[question % len(QUESTIONS)]}"
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    tally = StreamTally(sent)
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{model}: HTTP {response.status_code}: {(await response.aread()).decode()}")
        async for chunk in sse_data(response):
            tally.feed(chunk, time.perf_counter())
    result = tally.result(max_tokens, time.perf_counter())
    if result.error is not None:
        raise RuntimeError(f"{model}: {result.error}")
    return {
        "question": question % len(QUESTIONS),
        "ttft_s": result.ttft_s if result.ttft_s is not None else result.latency_s,
        "tokens": result.completion_tokens,
        "finish": result.finish_reason,
        "cut_by": result.filtered_by,
    }


async def _batch(url: str, model: str, n: int, rounds: int, max_tokens: int, first: int) -> dict[str, Any]:
    """N closed-loop clients, ``rounds`` requests each, on questions ``first``, ``first + 1``..."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def worker(w: int) -> list[dict[str, Any]]:
            return [await _one(client, model, max_tokens, first + w * rounds + r) for r in range(rounds)]

        started = time.perf_counter()
        done = await asyncio.gather(*(worker(w) for w in range(n)))
        wall = time.perf_counter() - started
    results = [r for worker_results in done for r in worker_results]
    ttfts = [r["ttft_s"] for r in results]
    return {
        "deployment": model,
        "concurrency": n,
        "requests": len(results),
        "tokens": sum(r["tokens"] for r in results),
        "wall_s": wall,
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p99_s": percentile(ttfts, 99),
        "questions": sorted({r["question"] for r in results}),
        "cut": [r for r in results if r["finish"] == "content_filter"],
    }


def summarise(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (deployment, N) over its repeats, and the paired filtered/plain ratios."""
    rows = []
    for n in sorted({b["concurrency"] for b in batches}):
        pairs: dict[int, dict[str, float]] = {}
        for b in batches:
            if b["concurrency"] == n:
                pairs.setdefault(b["repeat"], {})[b["deployment"]] = b["tokens_per_s"]
        ratios = [p["filtered"] / p["plain"] for p in pairs.values() if len(p) == 2]
        for model in DEPLOYMENTS:
            mine = [b for b in batches if b["concurrency"] == n and b["deployment"] == model]
            speeds = [b["tokens_per_s"] for b in mine]
            rows.append(
                {
                    "deployment": model,
                    "concurrency": n,
                    "repeats": len(mine),
                    "requests": sum(b["requests"] for b in mine),
                    "distinct_questions": len({q for b in mine for q in b["questions"]}),
                    "tokens_per_s_mean": statistics.fmean(speeds),
                    "tokens_per_s_min": min(speeds),
                    "tokens_per_s_max": max(speeds),
                    "tokens_per_s_stdev": statistics.stdev(speeds) if len(speeds) > 1 else 0.0,
                    "ttft_p50_s_median": statistics.median(b["ttft_p50_s"] for b in mine),
                    "ttft_p50_s_min": min(b["ttft_p50_s"] for b in mine),
                    "ttft_p50_s_max": max(b["ttft_p50_s"] for b in mine),
                    "ttft_p99_s_max": max(b["ttft_p99_s"] for b in mine),
                    "cut_by_filter": sum(len(b["cut"]) for b in mine),
                    "cut_categories": sorted({c for b in mine for r in b["cut"] for c in r["cut_by"]}),
                    "filtered_over_plain": ratios if model == "filtered" else None,
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| deployment | N | output tok/s, mean (min–max) | TTFT p50 s, median (min–max) | TTFT p99 s, max "
        "| cut by the filter | categories | filtered / plain, per pair |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratios = r["filtered_over_plain"]
        paired = ", ".join(f"{x:.2f}" for x in ratios) if ratios else "-"
        lines.append(
            f"| {r['deployment']} | {r['concurrency']} | {r['tokens_per_s_mean']:.1f} "
            f"({r['tokens_per_s_min']:.1f}–{r['tokens_per_s_max']:.1f}) | {r['ttft_p50_s_median']:.2f} "
            f"({r['ttft_p50_s_min']:.2f}–{r['ttft_p50_s_max']:.2f}) | {r['ttft_p99_s_max']:.2f} | "
            f"{r['cut_by_filter']}/{r['requests']} ({r['distinct_questions']} questions) | "
            f"{', '.join(r['cut_categories']) or '-'} | {paired} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = machine_info()  # the load average before the server starts
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = Path(args.data_dir or RESULTS_DIR.parent / ".cache" / f"filters-{port}")
    server = ManagedServer(
        "alize",
        [sys.executable, "-m", "alize.cli.main", "serve"],
        _env(port, data_dir, args.window, max(args.concurrency), args.weights, args.classifier),
        data_dir / "server.log",
    )
    server.start()
    batches: list[dict[str, Any]] = []
    try:
        server.wait_ready(f"{url}/ready", timeout_s=300)
        for model in DEPLOYMENTS:  # load both and warm them up outside the measurement
            await _batch(url, model, 1, 1, 8, 0)
        for n in args.concurrency:
            for repeat in range(args.repeats):
                order = DEPLOYMENTS if repeat % 2 == 0 else DEPLOYMENTS[::-1]
                first = repeat * n * args.rounds  # both deployments get the same questions
                for model in order:
                    batch = await _batch(url, model, n, args.rounds, args.max_tokens, first)
                    batches.append({**batch, "repeat": repeat, "ran": len(batches)})
                    print(
                        f"N={n} repeat {repeat} {model}: {batch['tokens_per_s']:.1f} tok/s, "
                        f"TTFT p50 {batch['ttft_p50_s']:.2f} s, cut {len(batch['cut'])}/{batch['requests']}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        server.stop()
    return {
        "benchmark": "filters",
        "command": " ".join(["python", "bench/filters.py", *sys.argv[1:]]),
        "machine": machine,
        "load_average_at_end": list(os.getloadavg()),
        "weights": str(args.weights) if args.weights else "packaged",
        "classifier": args.classifier or "the default (SAFETY__CLASSIFIER)",
        "window_tokens": args.window,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "questions": len(QUESTIONS),
        "summary": summarise(batches),
        "batches": batches,
    }


def main(argv: Sequence[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--concurrency", default="1,8", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--rounds", type=int, default=4, help="requests per client per batch")
    parser.add_argument("--repeats", type=int, default=3, help="batches per deployment and concurrency")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--weights", type=Path, default=None, help="classifier weights (default: packaged)")
    parser.add_argument(
        "--classifier", default=None, help="SAFETY__CLASSIFIER of the server (default: the setting's default)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "filters.json")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
