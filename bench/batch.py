"""Batch lane vs interactive traffic on the same deployment.

Usage::

    python bench/batch.py [--lines 200] [--probes 20] [--slots 4] [--max-tokens 32] [--batch-yield-s 1.0]

Starts one ``alize serve`` with the packaged SmolLM2 GGUF (``--slots`` slots, the embedded
worker on) and measures, on that one deployment:

1. **idle**: interactive TTFT of ``--probes`` streamed chat requests sent one after another;
2. **during a batch**: the same probes while a batch of ``--lines`` chat lines runs (its lines
   only take slots interactive traffic leaves free, and none starts within ``--batch-yield-s`` of
   an interactive arrival); and the batch's own throughput, lines and
   completion tokens per second from creation to ``completed``;
3. **interactive at full concurrency**: the same ``--lines`` requests sent as ordinary
   requests by ``--slots`` closed-loop clients, for the throughput comparison.

The probes use fresh prompts (a nonce, so no prefix is cached). Writes
``bench/results/batch.json`` and prints a markdown table. The target of issue 18: interactive
TTFT p50/p99 during the batch within 1.3x of idle.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from _common import PACKAGED_MODEL_ID, RESULTS_DIR, ManagedServer, free_port, machine_info, percentile

QUESTION = "Describe the river Loire and the towns along it."


def _env(port: int, data_dir: Path, slots: int, batch_yield_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env.update(
        ALIZE_PORT=str(port),
        ALIZE_DATA_DIR=str(data_dir),
        ALIZE_DEPLOYMENTS=json.dumps([{"name": PACKAGED_MODEL_ID, "parallel": slots}]),
        ALIZE_ENGINE__CTX_PER_SLOT="1024",
        ALIZE_CHAT__ENABLED="false",
        ALIZE_JOBS__BATCH_CONCURRENCY=str(slots * 2),
        ALIZE_JOBS__POLL_S="0.2",
        ALIZE_JOBS__BATCH_YIELD_S=str(batch_yield_s),
    )
    return env


def _body(max_tokens: int, nonce: str) -> dict[str, Any]:
    return {
        "model": PACKAGED_MODEL_ID,
        "messages": [{"role": "user", "content": f"[{nonce}] {QUESTION}"}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
    }


async def _probe(client: httpx.AsyncClient, max_tokens: int) -> float:
    """TTFT of one streamed request (to its first content chunk)."""
    body = {**_body(max_tokens, uuid.uuid4().hex[:8]), "stream": True}
    sent = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread()).decode()}")
        async for line in response.aiter_lines():  # read to the end: the slot is held until then
            if first is not None or not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if any(c["delta"].get("content") for c in json.loads(line[6:]).get("choices", [])):
                first = time.perf_counter() - sent
    if first is None:
        raise RuntimeError("the probe produced no content")
    return first


async def _probes(client: httpx.AsyncClient, n: int, max_tokens: int, gap_s: float = 0.2) -> list[float]:
    ttfts = []
    for _ in range(n):
        ttfts.append(await _probe(client, max_tokens))
        await asyncio.sleep(gap_s)
    return ttfts


def _summary(name: str, ttfts: list[float]) -> dict[str, Any]:
    return {
        "case": name,
        "probes": len(ttfts),
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p99_s": percentile(ttfts, 99),
        "ttfts_s": [round(t, 4) for t in ttfts],
    }


async def _run_batch(client: httpx.AsyncClient, lines: int, max_tokens: int) -> tuple[str, float]:
    data = "".join(
        json.dumps(
            {
                "custom_id": f"l{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": _body(max_tokens, f"b{i}"),
            }
        )
        + "\n"
        for i in range(lines)
    ).encode()
    uploaded = (
        await client.post(
            "/v1/files", files={"file": ("b.jsonl", io.BytesIO(data))}, data={"purpose": "batch"}
        )
    ).json()
    started = time.perf_counter()
    created = await client.post(
        "/v1/batches", json={"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions"}
    )
    return created.json()["id"], started


async def _wait_batch(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    while True:
        batch: dict[str, Any] = (await client.get(f"/v1/batches/{batch_id}")).json()
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch
        await asyncio.sleep(0.2)


async def _interactive(
    client: httpx.AsyncClient, lines: int, clients: int, max_tokens: int
) -> dict[str, Any]:
    queue = list(range(lines))
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while queue:
            i = queue.pop()
            reply = (await client.post("/v1/chat/completions", json=_body(max_tokens, f"i{i}"))).json()
            tokens += reply["usage"]["completion_tokens"]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "case": f"interactive x{clients}",
        "lines": lines,
        "wall_s": wall,
        "lines_per_s": lines / wall,
        "tokens_per_s": tokens / wall,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = Path(args.data_dir or RESULTS_DIR.parent / ".cache" / f"batch-{port}")
    server = ManagedServer(
        "alize",
        [sys.executable, "-m", "alize.cli.main", "serve"],
        _env(port, data_dir, args.slots, args.batch_yield_s),
        data_dir / "server.log",
    )
    server.start()
    try:
        server.wait_ready(f"{url}/ready", timeout_s=300)
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            await _probes(client, 3, args.max_tokens)  # warm-up
            idle = _summary("idle", await _probes(client, args.probes, args.max_tokens))
            batch_id, started = await _run_batch(client, args.lines, args.max_tokens)
            await asyncio.sleep(1.0)  # let the batch fill its lane
            during = _summary("during batch", await _probes(client, args.probes, args.max_tokens))
            batch = await _wait_batch(client, batch_id)
            wall = time.perf_counter() - started
            batch_case = {
                "case": "batch",
                "lines": batch["request_counts"]["completed"],
                "status": batch["status"],
                "wall_s": wall,
                "lines_per_s": batch["request_counts"]["completed"] / wall,
                "tokens_per_s": batch["usage"]["output_tokens"] / wall,
                "probes_overlapped": True,
            }
            interactive = await _interactive(client, args.lines, args.slots, args.max_tokens)
    finally:
        server.stop()
    ratio = {
        "p50": during["ttft_p50_s"] / idle["ttft_p50_s"],
        "p99": during["ttft_p99_s"] / idle["ttft_p99_s"],
    }
    return {
        "benchmark": "batch",
        "machine": machine_info(),
        "load_average": list(os.getloadavg()),
        "slots": args.slots,
        "batch_lane_slots": args.slots - max(1, args.slots // 4) if args.slots >= 2 else args.slots,
        "max_tokens": args.max_tokens,
        "batch_yield_s": args.batch_yield_s,
        "ttft": [idle, during],
        "ttft_ratio_during_over_idle": ratio,
        "throughput": [batch_case, interactive],
    }


def markdown(report: dict[str, Any]) -> str:
    rows = ["| case | TTFT p50 s | TTFT p99 s |", "|---|---|---|"]
    rows += [f"| {t['case']} | {t['ttft_p50_s']:.3f} | {t['ttft_p99_s']:.3f} |" for t in report["ttft"]]
    rows += ["", "| throughput | lines | wall s | lines/s | output tok/s |", "|---|---|---|---|---|"]
    rows += [
        f"| {t['case']} | {t['lines']} | {t['wall_s']:.1f} | {t['lines_per_s']:.2f} "
        f"| {t['tokens_per_s']:.1f} |"
        for t in report["throughput"]
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--batch-yield-s",
        type=float,
        default=1.0,
        help="ALIZE_JOBS__BATCH_YIELD_S for the server (0 = the lane's old rule: free slots only)",
    )
    parser.add_argument("--out", default="batch.json", help="file name under bench/results/")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
