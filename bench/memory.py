"""Memory a loaded deployment holds: the memory budget's estimate against the worker's resident set.

Usage::

    python bench/memory.py [--parallel 4] [--ctx-per-slot 2048] [--replies 0] [--reply-tokens 400]

Starts one ``alize serve`` with the packaged SmolLM2 on ``--parallel`` slots of
``--ctx-per-slot`` tokens, loads it with a one-token request, and reads the admin API's
``state.memory_estimate_bytes`` (what the budget plans) and ``state.memory_held_bytes`` (the
worker's resident memory, from /proc) just after loading. With ``--replies N`` it then sends N
concurrent ``--reply-tokens``-token replies (distinct prompts) and reads them again, which shows
how much of the gap the prompt cache and the touched KV cells fill with use.

Writes ``bench/results/memory.json`` (or ``--output``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from _common import PACKAGED_MODEL_ID, RESULTS_DIR, ManagedServer, free_port, machine_info

TOPICS = ("the river Loire", "bread", "the Alps", "honey", "tides", "lighthouses", "chess", "tulips")


def _state(url: str) -> dict[str, int]:
    view = httpx.get(f"{url}/admin/api/deployments/{PACKAGED_MODEL_ID}", timeout=60).json()
    state = view["state"]
    return {k: int(state[k]) for k in ("memory_estimate_bytes", "memory_held_bytes")}


async def _replies(url: str, n: int, tokens: int) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:

        async def one(i: int) -> int:
            body = {
                "model": PACKAGED_MODEL_ID,
                "messages": [
                    {"role": "user", "content": f"Write a long essay about {TOPICS[i % len(TOPICS)]}."}
                ],
                "max_tokens": tokens,
                "temperature": 0.7,
                "seed": i,
            }
            r = await client.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            return int(r.json()["usage"]["completion_tokens"])

        return sum(await asyncio.gather(*(one(i) for i in range(n))))


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| SmolLM2-135M Q4_1 | `memory_estimate_bytes` | `memory_held_bytes` (worker RSS) |",
        "|---|---|---|",
    ]
    for r in rows:
        est, held = r["memory_estimate_bytes"], r["memory_held_bytes"]
        lines.append(f"| {r['when']} | {est:,} ({est / 2**20:.0f} MiB) | {held:,} ({held / 2**20:.0f} MiB) |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = machine_info()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = Path(args.data_dir or RESULTS_DIR.parent / ".cache" / f"memory-{port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env.update(
        ALIZE_PORT=str(port),
        ALIZE_DATA_DIR=str(data_dir),
        ALIZE_DEPLOYMENTS=json.dumps([{"name": PACKAGED_MODEL_ID}]),
        ALIZE_CHAT__ENABLED="false",
        ALIZE_ENGINE__PARALLEL=str(args.parallel),
        ALIZE_ENGINE__CTX_PER_SLOT=str(args.ctx_per_slot),
    )
    server = ManagedServer(
        "alize", [sys.executable, "-m", "alize.cli.main", "serve"], env, data_dir / "server.log"
    )
    server.start()
    rows: list[dict[str, Any]] = []
    try:
        server.wait_ready(f"{url}/ready", timeout_s=300)
        asyncio.run(_replies(url, 1, 1))  # loads the model
        rows.append({"when": "just loaded", **_state(url)})
        if args.replies:
            generated = asyncio.run(_replies(url, args.replies, args.reply_tokens))
            when = f"after {args.replies} concurrent {args.reply_tokens}-token replies"
            rows.append({"when": when, "generated_tokens": generated, **_state(url)})
    finally:
        server.stop()
    return {
        "benchmark": "memory",
        "command": " ".join(["python", "bench/memory.py", *sys.argv[1:]]),
        "machine": machine,
        "parallel": args.parallel,
        "ctx_per_slot": args.ctx_per_slot,
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--ctx-per-slot", type=int, default=2048)
    parser.add_argument("--replies", type=int, default=0, help="concurrent replies before the second reading")
    parser.add_argument("--reply-tokens", type=int, default=400)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "memory.json")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    report = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
