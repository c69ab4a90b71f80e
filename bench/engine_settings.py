"""Engine settings that shape serving speed, measured in-process on the packaged model.

1. Prompt processing speed: one ~500-token prompt, llama.cpp's own ``timings.prompt_per_second``.
   It bounds cold time-to-first-token: N concurrent cold prompts of P tokens need N*P/speed.
2. KV layout: 8 concurrent cold streams over 16 slots with ``kv_unified`` on and off (Alizé
   defaults to off because a unified pool makes seeded sampling depend on other traffic).

Usage: .venv/bin/python bench/engine_settings.py [--output bench/results/engine_settings.json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from _common import packaged_gguf, percentile_or_zero

RESULTS = Path(__file__).resolve().parent / "results"


def _server(parallel: int, unified: bool) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(packaged_gguf())
    params.n_parallel = parallel
    params.n_ctx = parallel * 2048
    params.kv_unified = unified
    params.verbosity = 0
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.cache_ram_mib = 256
    return xllamacpp.Server(params)


def prompt_speed(runs: int = 3) -> list[float]:
    server = _server(1, False)
    speeds = []
    for i in range(runs):
        out: list[dict[str, Any]] = []
        prompt = f"{i} " + "The quick brown fox jumps over the lazy dog. " * 50
        server.handle_chat_completions(
            {"messages": [{"role": "user", "content": prompt}], "max_tokens": 1},
            lambda c, out=out: out.append(c) or False,  # type: ignore[misc]
        )
        speeds.append(float(out[0]["timings"]["prompt_per_second"]))
    return speeds


def concurrent_streams(unified: bool, streams: int = 8, max_tokens: int = 64) -> dict[str, float]:
    server = _server(16, unified)
    results: list[tuple[float, int]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        first: list[float] = []
        count = [0]

        def on_chunk(chunk: dict[str, Any]) -> bool:
            for choice in chunk.get("choices", []):
                if choice.get("delta", {}).get("content"):
                    count[0] += 1
                    if not first:
                        first.append(time.perf_counter() - started)
            return False

        messages = [
            {"role": "system", "content": secrets.token_hex(8) + " You answer questions about history."},
            {"role": "user", "content": f"Tell me about the history of city number {i}."},
        ]
        server.handle_chat_completions(
            {"messages": messages, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}, on_chunk
        )
        with lock:
            results.append((first[0] if first else float("nan"), count[0]))

    rounds = []
    for _ in range(2):
        results.clear()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        rounds.append(
            {
                "tokens_per_s": sum(n for _, n in results) / wall,
                "ttft_p50_s": percentile_or_zero([f for f, _ in results], 50),
            }
        )
    return {
        "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in rounds),
        "ttft_p50_s": statistics.mean(r["ttft_p50_s"] for r in rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS / "engine_settings.json")
    args = parser.parse_args()
    speeds = prompt_speed()
    print(f"prompt processing: {', '.join(f'{s:.0f}' for s in speeds)} tokens/s")
    layouts = {}
    for unified in (True, False):
        layouts["unified" if unified else "per_slot"] = r = concurrent_streams(unified)
        print(f"kv_unified={unified}: {r['tokens_per_s']:.1f} tok/s, TTFT p50 {r['ttft_p50_s']:.2f} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "prompt_tokens_per_s": speeds,
                "kv_layout_8_streams_16_slots": layouts,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
