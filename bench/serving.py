"""Serving benchmark: Alizé vs llama.cpp's own server, side by side, with `alize bench`'s generator.

One run starts both on the same packaged GGUF with the same engine settings (the llama.cpp side
is ``xllamacpp.Server`` in a process of its own, built by the very ``build_params`` Alizé's
worker uses, with no API key and no gateway in front), then loads each in turn at every
concurrency with the same prompts (``alize.cli.loadgen``: streamed chat completions, TTFT /
TPOT / ITL / E2EL, throughput). The difference is what the gateway costs: authentication,
admission, metering, SSE re-encoding, one more loopback hop.

    .venv/bin/python bench/serving.py                # → bench/results/serving.{json,png,md}
    .venv/bin/python bench/serving.py --concurrency 1,4 --num-prompts 8   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from _common import (
    CACHE_DIR,
    PACKAGED_MODEL_ID,
    RESULTS_DIR,
    ManagedServer,
    free_port,
    machine_info,
    package_version,
    packaged_gguf,
)
from alize.cli.loadgen import load_prompts, per_request, run_load, summarize

SYSTEMS = {"alize": "Alizé (gateway + worker)", "llamacpp": "llama.cpp server (xllamacpp, direct)"}
LOG_DIR = CACHE_DIR / "logs"

RAW_SERVER = textwrap.dedent(
    """
    import json, os, signal, threading
    import xllamacpp
    from alize.engines.llamacpp.worker import build_params
    params = build_params(json.loads(os.environ["BENCH_CONFIG"]), "unused")
    params.api_keys = []
    params.port = int(os.environ["BENCH_PORT"])
    server = xllamacpp.Server(params)
    print(json.dumps({"address": server.listening_address}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Event().wait()
    """
)


def engine_config(args: argparse.Namespace, gguf: Path) -> dict[str, Any]:
    """What Alizé's llama.cpp worker is given for the default deployment, at these settings."""
    return {
        "model_path": str(gguf),
        "parallel": args.parallel,
        "ctx_per_slot": args.ctx_per_slot,
        "threads": args.threads,
        "batch_size": 512,
        "cache_ram_mib": 256,
        "kv_unified": False,
        "lora_adapters": [],
    }


def start_alize(args: argparse.Namespace) -> tuple[ManagedServer, str, dict[str, Any]]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")},
        "ALIZE_HOST": "127.0.0.1",
        "ALIZE_PORT": str(port),
        "ALIZE_DATA_DIR": str(CACHE_DIR / f"serving-data-{os.getpid()}"),
        "ALIZE_LOG_LEVEL": "warning",
        "ALIZE_ENGINE__PARALLEL": str(args.parallel),
        "ALIZE_ENGINE__THREADS": str(args.threads),
        "ALIZE_ENGINE__CTX_PER_SLOT": str(args.ctx_per_slot),
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": PACKAGED_MODEL_ID}]),
    }
    cmd = [sys.executable, "-m", "alize.cli.main", "serve"]
    server = ManagedServer("alize", cmd, env, LOG_DIR / "serving-alize.log")
    server.start()
    waited = server.wait_ready(f"http://127.0.0.1:{port}/ready", args.ready_timeout)
    info = {"command": " ".join(cmd), "env": {k: v for k, v in env.items() if k.startswith("ALIZE_")}}
    return server, f"http://127.0.0.1:{port}/v1", {**info, "ready_after_s": round(waited, 2)}


def start_llamacpp(args: argparse.Namespace, gguf: Path) -> tuple[ManagedServer, str, dict[str, Any]]:
    port = free_port()
    config = engine_config(args, gguf)
    env = {**os.environ, "BENCH_CONFIG": json.dumps(config), "BENCH_PORT": str(port)}
    server = ManagedServer(
        "llamacpp", [sys.executable, "-c", RAW_SERVER], env, LOG_DIR / "serving-llamacpp.log"
    )
    server.start()
    waited = server.wait_ready(f"http://127.0.0.1:{port}/health", args.ready_timeout)
    return server, f"http://127.0.0.1:{port}/v1", {"engine_config": config, "ready_after_s": round(waited, 2)}


async def measure(url: str, args: argparse.Namespace, concurrency: int) -> dict[str, Any]:
    n = max(args.num_prompts, 2 * concurrency)
    prompts = load_prompts("builtin", n, output_len=args.output_len)
    # one warm-up request so neither side pays a first-request cost inside the measurement
    await run_load(url, PACKAGED_MODEL_ID, prompts[:1], concurrency=1, extra={"temperature": 0})
    duration, results = await run_load(
        url, PACKAGED_MODEL_ID, prompts, concurrency=concurrency, extra={"temperature": 0}
    )
    return {
        "concurrency": concurrency,
        "report": summarize(duration, results),
        "requests": per_request(results),
    }


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("output_throughput", None, "output tokens/s"),
        ("ttft_ms", "p50", "TTFT p50 (ms)"),
        ("tpot_ms", "p50", "TPOT p50 (ms)"),
        ("itl_ms", "p99", "ITL p99 (ms)"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.6))
    for ax, (key, stat, label) in zip(axes, panels, strict=True):
        for system, title in SYSTEMS.items():
            rows = record["results"][system]
            xs = [r["concurrency"] for r in rows]
            ys = [r["report"][key] if stat is None else r["report"][key][stat] for r in rows]
            ax.plot(xs, ys, marker="o", label=title)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    m, cfg = record["machine"], record["config"]
    fig.suptitle(
        f"{PACKAGED_MODEL_ID}, {cfg['output_len']} output tokens, {cfg['parallel']} slots, "
        f"{cfg['threads']} threads; {m['cpu_model']}, load {m['loadavg_at_start']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(record: dict[str, Any]) -> str:
    lines = [
        "| Clients | System | out tok/s | req/s | TTFT p50 / p99 (ms) | TPOT p50 (ms) | ITL p50 / p99 (ms) "
        "| failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(record["config"]["concurrency"]):
        for system, title in SYSTEMS.items():
            r = record["results"][system][i]["report"]
            lines.append(
                f"| {c} | {title} | {r['output_throughput']} | {r['request_throughput']} | "
                f"{r['ttft_ms']['p50']} / {r['ttft_ms']['p99']} | {r['tpot_ms']['p50']} | "
                f"{r['itl_ms']['p50']} / {r['itl_ms']['p99']} | {r['failed']} |"
            )
    return "\n".join(lines) + "\n"


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", default="1,2,4,8", help="comma-separated client counts")
    parser.add_argument(
        "--num-prompts", type=int, default=16, help="requests per level (at least 2x clients)"
    )
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=8, help="slots on both sides")
    parser.add_argument("--ctx-per-slot", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--ready-timeout", type=float, default=180)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "serving.json")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    gguf = packaged_gguf()
    record: dict[str, Any] = {
        "benchmark": "serving",
        "command": " ".join(["python", "bench/serving.py", *sys.argv[1:]]),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {"alize": package_version("alize"), "xllamacpp": package_version("xllamacpp")},
        "config": {
            "concurrency": levels,
            "num_prompts": args.num_prompts,
            "output_len": args.output_len,
            "parallel": args.parallel,
            "ctx_per_slot": args.ctx_per_slot,
            "threads": args.threads,
            "model": str(gguf.name),
        },
        "systems": {},
        "results": {name: [] for name in SYSTEMS},
    }
    alize, alize_url, alize_info = start_alize(args)
    try:
        llamacpp, llamacpp_url, llamacpp_info = start_llamacpp(args, gguf)
        try:
            record["systems"] = {"alize": alize_info, "llamacpp": llamacpp_info}
            for c in levels:  # interleaved, so a change in machine load touches both sides alike
                for system, url in (("alize", alize_url), ("llamacpp", llamacpp_url)):
                    print(f"{system} at {c} clients...", file=sys.stderr, flush=True)
                    record["results"][system].append(await measure(url, args, c))
        finally:
            llamacpp.stop()
    finally:
        alize.stop()
    record["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table(record))
    plot(record, args.out.with_suffix(".png"))
    print(table(record))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
