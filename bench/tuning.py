"""The packaged SmolLM2 tuned for this machine against the packaged one, in one run.

1. Runs the tuner that ``alize models tune`` runs (:class:`alize.deployments.tuning.Tuner`) on the
   packaged GGUF (nothing is recorded in a catalog), with the server's default engine settings
   as its baseline.
2. Measures the packaged weights with the default settings and the tuned settings and weights
   side by side, on llama.cpp workers started the way deployments start them: single-stream
   decode and prefill (llama.cpp's timings, median of ``--runs``), time to the first token of a
   ~256-token prompt, aggregate tokens/s at 1 and 8 concurrent streams, and the perplexity of the
   shipped text (the quality check the tuner applies: within 1 %).
3. Puts single-stream decode beside the memory-bandwidth bound: measured copy bandwidth ÷ the
   weight bytes one token reads.

Usage::

    .venv/bin/python bench/tuning.py                 # full tune, then the comparison
    .venv/bin/python bench/tuning.py --runs 1 --no-variants --output /tmp/t.json   # a quick look

Writes bench/results/tuning.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import CACHE_DIR, RESULTS_DIR, log, machine_info, packaged_gguf
from alize.catalog.tuning import TunedSettings, Tuning
from alize.config import EngineSettings
from alize.deployments.bandwidth import bound_tokens_per_second, bytes_per_token, memory_bandwidth_gb_s
from alize.deployments.tuning import TunePlan, Tuner
from alize.deployments.tuning_probe import perplexity_text, running
from alize.engines.base import EngineConfig
from alize.engines.llamacpp.process import worker_config


def _engine(settings: TunedSettings, path: Path, parallel: int) -> EngineConfig:
    return EngineConfig(
        kind="llamacpp",
        model_path=path,
        parallel=parallel,
        ctx_per_slot=1024,
        threads=settings.threads,
        batch_size=settings.batch_size,
        ubatch_size=settings.ubatch_size,
        flash_attn=settings.flash_attn,
        kv_cache_type=settings.kv_cache_type,
        cache_ram_mib=0,
    )


async def _ttft(probe: Any, prompt_tokens: int, runs: int) -> float:
    ids = await probe.tokenize(perplexity_text())
    times = []
    for run in range(runs + 1):
        lead = await probe.tokenize(f"{run + 1}.")
        started = time.perf_counter()
        await probe.completion(
            {"prompt": (lead + ids)[:prompt_tokens], "n_predict": 1, "cache_prompt": False}
        )
        if run:
            times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


async def measure(
    label: str, settings: TunedSettings, path: Path, args: argparse.Namespace
) -> dict[str, Any]:
    log(f"{label}: {path.name} {settings.model_dump(mode='json')}")
    async with running(worker_config(_engine(settings, path, 8))) as probe:
        speed = await probe.speed(prompt_tokens=256, decode_tokens=64, runs=args.runs)
        ttft = await _ttft(probe, 256, args.runs)
        streams = {n: await probe.throughput(streams=n, decode_tokens=64) for n in (1, 8)}
        ppl, scored = await probe.perplexity(perplexity_text(), max_tokens=256)
    bandwidth = memory_bandwidth_gb_s(threads=settings.threads)
    per_token = bytes_per_token(path)
    bound = bound_tokens_per_second(bandwidth, per_token)
    return {
        "weights": path.name,
        "settings": settings.model_dump(mode="json"),
        "decode_tokens_per_second": speed.decode_tokens_per_second,
        "prefill_tokens_per_second": speed.prefill_tokens_per_second,
        "ttft_256_tokens_s": ttft,
        "throughput_tokens_per_second": {f"{n}_streams": v for n, v in streams.items()},
        "perplexity": round(ppl, 4),
        "perplexity_tokens": scored,
        "memory_bandwidth_gb_s": bandwidth,
        "bytes_per_token": per_token,
        "bandwidth_bound_tokens_per_second": bound,
        "fraction_of_bound": round(speed.decode_tokens_per_second / bound, 3) if bound else None,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import xllamacpp

    path = packaged_gguf()
    server = EngineSettings()
    threads = args.threads or server.threads
    defaults = EngineConfig(kind="llamacpp", threads=threads, batch_size=server.batch_size)
    plan = TunePlan(
        runs=args.runs,
        variants=args.variants,
        slots=args.slots,
        defaults=defaults,
        threads=(args.threads,) if args.threads else None,
    )
    started = time.perf_counter()

    def progress(what: str, done: int, total: int) -> None:
        log(f"tune {done}/{total}: {what}")

    tuner = Tuner(
        "smollm2-135m-instruct",
        path,
        plan,
        variants_dir=CACHE_DIR / "tuning-variants",
        engine_features=str(xllamacpp.get_system_info()),
        progress=progress,
    )
    tuning: Tuning = await tuner.run()
    packaged = TunedSettings(threads=threads, batch_size=server.batch_size)
    tuned_path = Path(tuning.variant_path) if tuning.variant_path else path
    before = await measure("packaged, default settings", packaged, path, args)
    after = await measure("tuned", tuning.settings, tuned_path, args)
    change = after["perplexity"] / before["perplexity"] - 1
    return {
        "benchmark": "tuning",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "engine_build": str(xllamacpp.get_system_info()),
        "duration_s": round(time.perf_counter() - started, 1),
        "tuning": tuning.model_dump(mode="json"),
        "packaged": before,
        "tuned": after,
        "perplexity_change": round(change, 5),
        "quality_holds": change <= 0.01,
        "decode_speedup": round(after["decode_tokens_per_second"] / before["decode_tokens_per_second"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-variants", dest="variants", action="store_false")
    parser.add_argument("--no-slots", dest="slots", action="store_false")
    parser.add_argument("--threads", type=int, default=None, help="only this thread count (default: try)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "tuning.json")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    for label in ("packaged", "tuned"):
        r = report[label]
        streams = r["throughput_tokens_per_second"]
        print(
            f"{label:9} decode {r['decode_tokens_per_second']:7.1f} tok/s ({r['fraction_of_bound']:.0%} "
            f"of the {r['bandwidth_bound_tokens_per_second']:.0f} tok/s bound), 1/8 streams "
            f"{streams['1_streams']:.1f}/{streams['8_streams']:.1f} tok/s, "
            f"TTFT {r['ttft_256_tokens_s']:.3f} s, perplexity {r['perplexity']:.3f}"
        )
    print(f"perplexity change {report['perplexity_change']:+.2%}; wrote {args.output}")


if __name__ == "__main__":
    main()
