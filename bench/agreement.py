"""Do `alize bench` and `bench/engine.py` measure the same thing? One server, one load, both clients.

`alize bench` (``alize.cli.loadgen``) is the load generator users run; ``bench/engine.py``
measures with its own client (``engine_systems.HttpSystem``, ``_common.StreamTally``). Issue 20
asks that their TTFT and TPOT agree within 10% for the same load. This script starts one
``alize serve`` on the packaged SmolLM2 GGUF and, at each concurrency, sends the same prompts with
the same sampling (greedy, ``ignore_eos``, the same ``max_tokens``) through each client in turn,
``--rounds`` times, alternating which goes first so that a drift of the machine's speed lands on
both. It reports each client's TTFT and TPOT medians (pooled over the rounds) and their ratio.

    .venv/bin/python bench/agreement.py                   # → bench/results/agreement.json
    .venv/bin/python bench/agreement.py --concurrency 1 --rounds 1 --requests 4   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from _common import CACHE_DIR, PACKAGED_MODEL_ID, RESULTS_DIR, ManagedServer, free_port, machine_info
from alize.cli.loadgen import Prompt, load_prompts, run_load
from engine_systems import HttpSystem

CLIENTS = ("alize bench", "bench/engine.py")


def _server(port: int, slots: int) -> ManagedServer:
    data = CACHE_DIR / f"agreement-{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env.update(
        ALIZE_PORT=str(port),
        ALIZE_DATA_DIR=str(data),
        ALIZE_DEPLOYMENTS=json.dumps([{"name": PACKAGED_MODEL_ID, "parallel": slots}]),
        ALIZE_ENGINE__CTX_PER_SLOT="1024",
        ALIZE_CHAT__ENABLED="false",
    )
    return ManagedServer("alize", [sys.executable, "-m", "alize.cli.main", "serve"], env, data / "server.log")


async def _loadgen(url: str, prompts: list[Prompt], concurrency: int) -> tuple[list[float], list[float]]:
    extra = {"temperature": 0, "top_p": 0.95, "ignore_eos": True}
    _, results = await run_load(f"{url}/v1", PACKAGED_MODEL_ID, prompts, concurrency=concurrency, extra=extra)
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"alize bench: {len(failed)} failed, e.g. {failed[0]}")
    ttft = [r.ttft_s for r in results if r.ttft_s is not None]
    tpot = [t for r in results if (t := r.tpot_s) is not None]
    return ttft, tpot


async def _engine_client(
    system: HttpSystem, prompts: list[Prompt], concurrency: int
) -> tuple[list[float], list[float]]:
    per_client: list[list[dict[str, Any]]] = [[] for _ in range(concurrency)]
    for i, prompt in enumerate(prompts):
        per_client[i % concurrency].append(system.body(prompt.messages, prompt.max_tokens))
    _, results = await system.run_batch(per_client)
    failed = [r.error for r in results if r.error]
    if failed:
        raise RuntimeError(f"bench/engine.py client: {len(failed)} failed, e.g. {failed[0]}")
    ttft = [r.ttft_s for r in results if r.ttft_s is not None]
    tpot = [
        (r.latency_s - r.ttft_s) / (r.completion_tokens - 1)
        for r in results
        if r.ttft_s is not None and r.completion_tokens > 1
    ]
    return ttft, tpot


class _RunningAlize(HttpSystem):
    """bench/engine.py's HTTP client, pointed at the server this script started."""

    key = "alize"

    async def setup(self) -> None:
        self.open_client()


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000.0, 2)


async def measure(args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    system_args = argparse.Namespace(
        concurrency=args.concurrency, temperature=0.0, read_timeout=600.0, request_timeout=600.0
    )
    system = _RunningAlize(system_args, Path("unused.gguf"), eog_ids=[])
    system.base_url, system.model = url, PACKAGED_MODEL_ID
    await system.setup()
    rows = []
    try:
        for concurrency in args.concurrency:
            prompts = load_prompts("builtin", max(args.requests, 2 * concurrency), output_len=args.output_len)
            await _loadgen(url, prompts[:concurrency], concurrency)  # warm both paths' connections
            await _engine_client(system, prompts[:concurrency], concurrency)
            pooled: dict[str, tuple[list[float], list[float]]] = {c: ([], []) for c in CLIENTS}
            for round_ in range(args.rounds):
                order = CLIENTS if round_ % 2 == 0 else CLIENTS[::-1]
                for client in order:
                    if client == "alize bench":
                        ttft, tpot = await _loadgen(url, prompts, concurrency)
                    else:
                        ttft, tpot = await _engine_client(system, prompts, concurrency)
                    pooled[client][0].extend(ttft)
                    pooled[client][1].extend(tpot)
            medians = {
                c: {"ttft_p50_ms": _median_ms(t), "tpot_p50_ms": _median_ms(p)}
                for c, (t, p) in pooled.items()
            }
            a, e = medians["alize bench"], medians["bench/engine.py"]
            row = {
                "concurrency": concurrency,
                "requests_per_round": len(prompts),
                "rounds": args.rounds,
                **{c: medians[c] for c in CLIENTS},
                "ttft_ratio": round(a["ttft_p50_ms"] / e["ttft_p50_ms"], 3),
                "tpot_ratio": round(a["tpot_p50_ms"] / e["tpot_p50_ms"], 3),
            }
            row["within_10_percent"] = all(abs(row[k] - 1) <= 0.10 for k in ("ttft_ratio", "tpot_ratio"))
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        await system.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=16, help="requests per round (at least 2 per client)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--slots", type=int, default=8)
    args = parser.parse_args()
    port = free_port()
    server = _server(port, args.slots)
    machine = machine_info()
    server.start()
    try:
        server.wait_ready(f"http://127.0.0.1:{port}/ready", timeout_s=300)
        rows = asyncio.run(measure(args, f"http://127.0.0.1:{port}"))
    finally:
        server.stop()
    report = {
        "benchmark": "agreement",
        "command": "python bench/agreement.py " + " ".join(sys.argv[1:]),
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "model": PACKAGED_MODEL_ID,
        "output_len": args.output_len,
        "rows": rows,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "agreement.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
