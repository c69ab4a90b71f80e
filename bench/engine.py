"""Engine benchmark: Alizé over HTTP vs xllamacpp in-process vs llama-cpp-python's server.

One run, side by side, on the same GGUF, the same prompts, the same thread count and the same number of
slots. At each concurrency N, N closed-loop clients each send ``--rounds`` streaming chat requests one
after another; the batch's aggregate output rate is total completion tokens / wall time of the batch, and
TTFT is the time from sending a request to its first content chunk. Cold prompts carry a fresh nonce at the
very start of the conversation (nothing cached); warm prompts repeat one fixed conversation after a priming
batch, so the prompt cache hits.

Systems:
  alize             Alizé's server (``alize serve``) over HTTP with SSE streaming, the full stack a user gets.
  xllamacpp         xllamacpp called in-process from Python threads, the engine's ceiling.
  llama-cpp-python  ``python -m llama_cpp.server`` from a temporary venv in bench/.cache (never part of
                    Alizé's install); one sequence at a time, requests queue (``interrupt_requests=False``).

Run ``python bench/engine.py --help`` for options; bench/README.md has the exact commands. The systems
and prompts live in ``engine_systems.py``, the tables and the plot in ``engine_report.py``; the stream
tally and the percentile are ``_common``'s, shared by every benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    PACKAGED_MODEL_ID,
    REPO_ROOT,
    RESULTS_DIR,
    Req,
    log,
    machine_info,
    package_version,
    packaged_gguf,
    percentile,
)
from engine_prompts import (
    PROMPTS,
    SYSTEM_PROMPT,
    WARM_PROMPT_INDEX,
    cold_messages,
    eog_token_ids,
    warm_messages,
)
from engine_report import markdown, plot, write_json
from engine_systems import SYSTEM_CLASSES, SYSTEMS, System
from llcpp_venv import LLCPP_VENV, LOG_DIR, llcpp_version


def summarize(
    results: list[Req], wall_s: float, concurrency: int, rounds: int, max_tokens: int
) -> dict[str, Any]:
    ok = [r for r in results if r.error is None]
    ttfts = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    lat = [r.latency_s * 1000 for r in ok]
    tokens = sum(r.completion_tokens for r in ok)
    prompt = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    cached = [r.cached_tokens for r in ok if r.cached_tokens is not None]

    def rnd(x: float | None, nd: int = 1) -> float | None:
        return None if x is None else round(x, nd)

    return {
        "concurrency": concurrency,
        "rounds": rounds,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "error_samples": sorted({r.error for r in results if r.error})[:3],
        "completion_tokens": tokens,
        "completion_tokens_min": min((r.completion_tokens for r in ok), default=None),
        "completion_tokens_max": max((r.completion_tokens for r in ok), default=None),
        "short_requests": sum(1 for r in ok if r.completion_tokens < max_tokens),
        "tokens_source": sorted({r.tokens_source for r in ok}),
        "finish_reasons": dict(Counter(str(r.finish_reason) for r in ok)),
        "wall_s": round(wall_s, 3),
        "tokens_per_s": rnd(tokens / wall_s if wall_s > 0 else None, 2),
        "ttft_p50_ms": rnd(percentile(ttfts, 50)),
        "ttft_p99_ms": rnd(percentile(ttfts, 99)),
        "ttft_max_ms": rnd(max(ttfts, default=None)),
        "latency_p50_ms": rnd(percentile(lat, 50)),
        "prompt_tokens_mean": rnd(sum(prompt) / len(prompt) if prompt else None),
        "cached_tokens_mean": rnd(sum(cached) / len(cached) if cached else None),
    }


# ------------------------------------------------------------------------------------------- the run


@dataclass
class Batch:
    """One measured batch: its wall time, its requests and the CPU seconds the system's processes
    used meanwhile, by part (``None`` where the system cannot tell)."""

    wall_s: float
    results: list[Req]
    cpu_s: dict[str, float] | None


async def measured_batch(system: System, bodies: list[list[dict[str, Any]]]) -> Batch:
    before = system.cpu_seconds()
    wall, res = await system.run_batch(bodies)
    after = system.cpu_seconds()
    cpu = None if before is None or after is None else {k: after[k] - before[k] for k in after if k in before}
    return Batch(wall, res, cpu)


def case(batches: list[Batch], n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The figures of one (system, concurrency, prompt) cell over its batches: the requests of all
    of them, tokens/s over their summed wall time, the CPU per completion token (the gateway's and
    the engine's, where the system can tell) and, with several batches, each one's tokens/s and
    TTFT p50 (the spread a single run cannot show)."""
    results = [r for b in batches for r in b.results]
    out = summarize(results, sum(b.wall_s for b in batches), n, args.rounds, args.max_tokens)
    tokens = out["completion_tokens"]
    if tokens and all(b.cpu_s is not None for b in batches):
        parts = set.intersection(*(set(b.cpu_s or {}) for b in batches))
        out["cpu_ms_per_token"] = {
            k: round(sum((b.cpu_s or {})[k] for b in batches) * 1000 / tokens, 3) for k in sorted(parts)
        }
    if len(batches) > 1:
        each = [summarize(b.results, b.wall_s, n, args.rounds, args.max_tokens) for b in batches]
        out["repeats"] = len(batches)
        out["per_repeat"] = [{k: c[k] for k in ("tokens_per_s", "ttft_p50_ms")} for c in each]
    return out


async def warm_up(system: System, args: argparse.Namespace) -> None:
    """Set up, then a few unmeasured requests at every slot the run will use."""
    await system.setup()
    warm_up_tokens = 8
    log(f"{system.key}: warming up")
    await system.run_batch([[system.body(cold_messages(i), warm_up_tokens)] for i in range(2)])
    n_max = max(args.concurrency)
    _, res = await system.run_batch([[system.body(cold_messages(i), warm_up_tokens)] for i in range(n_max)])
    bad = [r.error for r in res if r.error]
    if bad:
        log(f"{system.key}: {len(bad)} warm-up errors, e.g. {bad[0]}")


async def measure_level(system: System, n: int, args: argparse.Namespace) -> dict[str, Batch]:
    """One cold batch and one warm batch at concurrency ``n``."""
    cold = [
        [system.body(cold_messages(w + r * n), args.max_tokens) for r in range(args.rounds)] for w in range(n)
    ]
    batches = {"cold": await measured_batch(system, cold)}
    # Prime: the same batch once, unmeasured, so every slot (or the prompt cache) holds the prompt.
    await system.run_batch([[system.body(warm_messages(), args.max_tokens)] for _ in range(n)])
    one = system.body(warm_messages(), args.max_tokens)
    warm = [[dict(one) for _ in range(args.rounds)] for _ in range(n)]
    batches["warm"] = await measured_batch(system, warm)
    return batches


def _log_case(key: str, n: int, phase: str, c: dict[str, Any]) -> None:
    log(
        f"{key} c={n} {phase}: {c['tokens_per_s']} tok/s, TTFT p50 {c['ttft_p50_ms']} ms "
        f"p99 {c['ttft_p99_ms']} ms, {c['completion_tokens']} tokens, {c['errors']} errors, "
        f"cached {c['cached_tokens_mean']}/{c['prompt_tokens_mean']}"
        + "".join(f", {k} {v} ms CPU/token" for k, v in (c.get("cpu_ms_per_token") or {}).items())
    )


async def bench_system(system: System, args: argparse.Namespace) -> dict[str, Any]:
    """One system alone: every concurrency, cold then warm, then the next system."""
    out: dict[str, Any] = {"info": system.info, "results": {}, "loadavg_at_start": _loadavg()}
    try:
        await warm_up(system, args)
        for n in args.concurrency:
            batches = await measure_level(system, n, args)
            cases = {phase: case([b], n, args) for phase, b in batches.items()}
            out["results"][str(n)] = cases
            for phase, c in cases.items():
                _log_case(system.key, n, phase, c)
    except Exception as exc:
        out["failed"] = f"{type(exc).__name__}: {exc}"
        log(f"{system.key}: FAILED: {out['failed']}")
    finally:
        await system.teardown()
        out["loadavg_at_end"] = _loadavg()
    return out


async def bench_interleaved(systems: list[System], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every system up at once; at each concurrency, ``--interleave`` rounds in which each system
    runs its cold and warm batches in turn (the order rotated every round), so that a machine
    whose speed drifts from minute to minute (a shared VM) weighs on every system alike and the
    ratios compare batches run seconds apart, not minutes. The systems not being measured sit
    idle (an idle ``alize serve`` with a loaded model used 0.04 s of CPU in 10 s), but loading
    them all is not free: the in-process engine's 1-stream TTFT read 24-32 ms interleaved against
    12-17 ms alone (docs/benchmarks.md), so read 1-stream ratios of this mode with care."""
    outs: dict[str, dict[str, Any]] = {
        s.key: {"info": s.info, "results": {}, "loadavg_at_start": _loadavg()} for s in systems
    }
    live: list[System] = []
    try:
        for system in systems:
            try:
                await warm_up(system, args)
                live.append(system)
            except Exception as exc:
                outs[system.key]["failed"] = f"{type(exc).__name__}: {exc}"
                log(f"{system.key}: FAILED: {outs[system.key]['failed']}")
        for n in args.concurrency:
            cells: dict[tuple[str, str], list[Batch]] = {}
            for turn in range(args.interleave):
                order = live[turn % len(live) :] + live[: turn % len(live)] if live else []
                for system in order:
                    for phase, batch in (await measure_level(system, n, args)).items():
                        cells.setdefault((system.key, phase), []).append(batch)
            for (key, phase), batches in cells.items():
                c = case(batches, n, args)
                outs[key]["results"].setdefault(str(n), {})[phase] = c
                _log_case(key, n, phase, c)
    finally:
        for system in systems:
            with contextlib.suppress(Exception):
                await system.teardown()
            outs[system.key]["loadavg_at_end"] = _loadavg()
    return outs


def _loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def versions() -> dict[str, Any]:
    return {
        "alize": package_version("alize"),
        "xllamacpp": package_version("xllamacpp"),
        "httpx": package_version("httpx"),
        "llama-cpp-python": llcpp_version(LLCPP_VENV / "bin" / "python"),
    }


def _display_path(path: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(Path.cwd()))
    return path


async def run(args: argparse.Namespace, json_path: Path) -> dict[str, Any]:
    gguf_path = packaged_gguf()
    eog = eog_token_ids(gguf_path)
    report: dict[str, Any] = {
        "benchmark": "engine",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([_display_path(sys.executable), *sys.argv]),
        "cwd": str(Path.cwd()),
        "machine": machine_info(),
        "config": {
            "model": str(gguf_path.name),
            "gguf_path": str(gguf_path),
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "top_p": 0.95,
            "threads": args.threads,
            "parallel": args.parallel,
            "ctx_per_slot": args.ctx_per_slot,
            "batch_size": args.batch_size,
            "cache_ram_mib": args.cache_ram_mib,
            "kv_unified_inprocess": args.kv_unified,
            "think_ms": args.think_ms,
            "interleave": args.interleave,
            "alize_policies": (
                "as configured on the server given with --alize-url"
                if args.alize_url
                else "api key + key and project rate limits + monthly budget + prices + metering"
                if args.policies
                else "open mode (no keys, limits or budget; metering on)"
            ),
            "eog_token_ids": eog,
            "prompts": list(PROMPTS),
            "system_prompt": SYSTEM_PROMPT,
            "warm_prompt_index": WARM_PROMPT_INDEX,
            "method": (
                "At concurrency N, N clients each send `rounds` streaming requests back to back. "
                "tokens_per_s = completion tokens of the batch / wall time of the batch. "
                "TTFT = send to first content chunk. cold: a fresh nonce starts every conversation. "
                "warm: one fixed conversation, after an unmeasured priming batch at the same concurrency. "
                "think_ms > 0: before each request a client waits a seeded random 0..think_ms ms, the "
                "same waits for every system (wall time includes them); think_ms = 0: lockstep, every "
                "client's next request leaves the moment its previous one ends. interleave N > 1: every "
                "system up at once, each concurrency run as N rounds of each system's cold and warm "
                "batches in turn (order rotated); a cell's figures are over all N batches "
                "(tokens_per_s over their summed wall time), per_repeat lists each batch's own. "
                "cpu_ms_per_token: user + system CPU of the server process (gateway) and of the "
                "engine's processes over the batch, per completion token."
            ),
        },
        "systems": {},
    }
    if args.interleave > 1:
        systems = [SYSTEM_CLASSES[key](args, gguf_path, eog) for key in args.systems]
        log(f"=== {', '.join(args.systems)}, interleaved x{args.interleave} ===")
        report["systems"] = await bench_interleaved(systems, args)
    else:
        for key in args.systems:
            system = SYSTEM_CLASSES[key](args, gguf_path, eog)
            log(f"=== {key} ===")
            report["systems"][key] = await bench_system(system, args)
            write_json(report, json_path)  # keep what we have if a later system fails
    report["versions"] = versions()
    return report


# ---------------------------------------------------------------------------------------------- the CLI


def _int_list(text: str) -> list[int]:
    values = [int(x) for x in text.replace(",", " ").split()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("want positive integers, e.g. 1,2,4,8,16")
    return values


def _systems(text: str) -> list[str]:
    aliases = {"a": "alize", "b": "xllamacpp", "c": "llama-cpp-python", "llcpp": "llama-cpp-python"}
    chosen = [aliases.get(x, x) for x in text.replace(",", " ").split()]
    for x in chosen:
        if x not in SYSTEMS:
            raise argparse.ArgumentTypeError(f"unknown system {x!r}; choose from {', '.join(SYSTEMS)}")
    return chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", type=_systems, default=list(SYSTEMS), help="comma-separated subset")
    ap.add_argument("--concurrency", type=_int_list, default=[1, 2, 4, 8, 16], help="e.g. 1,2,4,8,16")
    ap.add_argument("--max-tokens", type=int, default=128, help="output tokens per request")
    ap.add_argument("--rounds", type=int, default=2, help="requests each client sends per batch")
    ap.add_argument(
        "--interleave",
        type=int,
        default=1,
        help="N > 1: start every system at once and, at each concurrency, run each one's batches in "
        "turn N times (order rotated), so drift in the machine's speed weighs on all alike; each "
        "cell then also lists its N tokens/s and TTFT p50 (per_repeat). 1 (the default): one "
        "system after another",
    )
    ap.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="before each request a client waits a seeded random 0..N ms, the same waits for every "
        "system: arrivals as independent users make them. 0 (the default) is lockstep: with equal "
        "lengths every client's next request arrives at the same moment, which an in-process engine "
        "batches into one step and anything that staggers arrivals by a few ms does not",
    )
    ap.add_argument("--quick", action="store_true", help="smoke mode: concurrency 1,2; 16 tokens; 1 round")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for every engine")
    ap.add_argument("--parallel", type=int, default=16, help="slots (sequences decoded together)")
    ap.add_argument("--ctx-per-slot", type=int, default=2048, help="context tokens per slot")
    ap.add_argument(
        "--kv-unified",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="xllamacpp in-process: one KV buffer shared by all slots",
    )
    ap.add_argument("--batch-size", type=int, default=512, help="logical batch for prompt processing")
    ap.add_argument("--cache-ram-mib", type=int, default=256, help="llama.cpp host prompt cache")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--port", type=int, default=8765, help="Alizé's port; llama-cpp-python's is port+1")
    ap.add_argument("--alize-url", help="benchmark an already-running OpenAI-compatible server instead")
    ap.add_argument(
        "--alize-cmd",
        help="command that starts Alizé; {port} and {python} are filled in "
        "(default: .venv/bin/alize serve --host 127.0.0.1 --port {port})",
    )
    ap.add_argument("--alize-model", default=PACKAGED_MODEL_ID, help="model id sent to Alizé")
    ap.add_argument("--alize-api-key", help="Bearer token for Alizé (default: $ALIZE_BENCH_API_KEY)")
    ap.add_argument(
        "--policies",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the Alizé the bench starts serves with an API key, key and project rate limits, a "
        "monthly budget and prices (metering is always on); --no-policies: open mode",
    )
    ap.add_argument("--llcpp-python", help="a python that already has llama-cpp-python[server]")
    ap.add_argument("--llcpp-spec", default="llama-cpp-python", help="pip requirement to build")
    ap.add_argument("--llcpp-cmake-args", default="-DGGML_NATIVE=ON", help="CMAKE_ARGS for the wheel build")
    ap.add_argument("--ready-timeout", type=float, default=300.0, help="seconds a server may take to start")
    ap.add_argument("--request-timeout", type=float, default=600.0, help="upper bound on one request")
    ap.add_argument("--read-timeout", type=float, default=120.0, help="longest silence within a stream")
    ap.add_argument("--output", type=Path, help="JSON path (default bench/results/engine[-quick].json)")
    ap.add_argument("--render-only", type=Path, help="re-render table and plot from an existing JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.concurrency = [1, 2]
        args.max_tokens = 16
        args.rounds = 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_only:
        report = json.loads(args.render_only.read_text())
        json_path = args.render_only
    else:
        json_path = args.output or RESULTS_DIR / ("engine-quick.json" if args.quick else "engine.json")
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(run(args, json_path))
        write_json(report, json_path)
        log(f"wrote {json_path.relative_to(REPO_ROOT) if json_path.is_relative_to(REPO_ROOT) else json_path}")
    table = markdown(report)
    json_path.with_suffix(".md").write_text(table)
    try:
        plot(report, json_path.with_suffix(".png"))
        log(f"wrote {json_path.with_suffix('.png')}")
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
    print(table)
    failed = [k for k, s in report["systems"].items() if s.get("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
