"""What content filters cost: the same model served with and without input + output filters.

Usage::

    python bench/filters.py [--concurrency 1,8] [--rounds 2] [--max-tokens 128] [--window 16]

Starts one ``alize serve`` with two declared deployments of the packaged SmolLM2 GGUF, identical
but for their safety policy: ``plain`` (no filter) and ``filtered`` (input filter with PII
redaction, output filter with the default rules, checked every ``--window`` tokens). At each
concurrency N, N closed-loop clients each send ``--rounds`` streamed chat requests with fresh
prompts (a nonce, so nothing is cached), alternating deployments batch by batch so both see the
same machine state. Per deployment and N: aggregate output tokens/s (usage tokens / batch wall
time), TTFT p50/p99 (to the first content chunk: with an output filter that is the first
*released* window), and how many replies the filter cut.

Writes ``bench/results/filters.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from _common import RESULTS_DIR, ManagedServer, StreamTally, free_port, machine_info, percentile, sse_data

DEPLOYMENTS = ("plain", "filtered")
QUESTIONS = (
    "Describe the river Loire and the towns along it.",
    "Explain how bread rises, step by step.",
    "Write a short letter inviting a colleague to a meeting.",
    "List some advice for a first trip to the Alps.",
)


def _env(port: int, data_dir: Path, window: int, slots: int) -> dict[str, str]:
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
    return env


async def _one(client: httpx.AsyncClient, model: str, max_tokens: int, i: int) -> dict[str, Any]:
    prompt = f"[{uuid.uuid4().hex[:8]}] {QUESTIONS[i % len(QUESTIONS)]}"
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
    return {
        "ttft_s": result.ttft_s if result.ttft_s is not None else result.latency_s,
        "tokens": result.completion_tokens,
        "finish": result.finish_reason,
        "cut_by": result.filtered_by,
    }


async def _batch(url: str, model: str, n: int, rounds: int, max_tokens: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def worker(w: int) -> list[dict[str, Any]]:
            return [await _one(client, model, max_tokens, w * rounds + r) for r in range(rounds)]

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
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p99_s": percentile(ttfts, 99),
        "cut_by_filter": sum(1 for r in results if r["finish"] == "content_filter"),
        "cut_categories": sorted({c for r in results for c in r["cut_by"]}),
    }


def markdown(cases: list[dict[str, Any]]) -> str:
    rows = [
        "| deployment | N | output tok/s | TTFT p50 s | TTFT p99 s | cut by filter | categories |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        rows.append(
            f"| {c['deployment']} | {c['concurrency']} | {c['tokens_per_s']:.1f} | "
            f"{c['ttft_p50_s']:.2f} | {c['ttft_p99_s']:.2f} | {c['cut_by_filter']}/{c['requests']} | "
            f"{', '.join(c['cut_categories']) or '-'} |"
        )
    return "\n".join(rows)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = Path(args.data_dir or RESULTS_DIR.parent / ".cache" / f"filters-{port}")
    server = ManagedServer(
        "alize",
        [sys.executable, "-m", "alize.cli.main", "serve"],
        _env(port, data_dir, args.window, max(args.concurrency)),
        data_dir / "server.log",
    )
    server.start()
    try:
        server.wait_ready(f"{url}/ready", timeout_s=300)
        for model in DEPLOYMENTS:  # load both and warm them up outside the measurement
            await _batch(url, model, 1, 1, 8)
        cases: list[dict[str, Any]] = []
        for n in args.concurrency:
            for model in DEPLOYMENTS:
                cases.append(await _batch(url, model, n, args.rounds, args.max_tokens))
                print(markdown(cases[-1:]).splitlines()[-1], flush=True)
    finally:
        server.stop()
    return {
        "benchmark": "filters",
        "machine": machine_info(),
        "window_tokens": args.window,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "load_average": list(os.getloadavg()),
        "cases": cases,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", default="1,8", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "filters.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report["cases"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
