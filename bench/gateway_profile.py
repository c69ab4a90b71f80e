"""Where the gateway's own time goes on one streamed chat request, step by step.

Alizé is served in this process (uvicorn on 127.0.0.1, the event loop ``alize serve`` uses) with API
keys, rate limits (key and project), a monthly budget with prices and metering all on. One client
thread sends ``--requests`` streamed chat completions one after another, the packaged SmolLM2, the
warm conversation of ``engine.py`` (its prompt cache hits, so the engine's own time is small and the
platform's shows). Each step of the pipeline is timed by wrapping the live services' methods:

  key lookup (the auth gate) · limits (acquire) · budget reservation · token counting (each call to
  the worker) · slot admission · the hop to the worker (request sent → first token read back) ·
  SSE re-encoding (time inside the encoder, the engine's waits taken out) · settling (limiter release,
  the usage row, the budget charge) · the final chunk.

Then the same body is sent straight to the llama.cpp worker's own HTTP listener (its address and
secret read from the running engine): the engine's TTFT over HTTP with nothing in front. The added
TTFT is Alizé's minus the worker's (medians). ``--cprofile`` also profiles the serving thread over
the measured requests and keeps the top functions.

Usage: .venv/bin/python bench/gateway_profile.py [--requests 40] [--cprofile]
       [--output bench/results/gateway_profile.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from _common import RESULTS_DIR, free_port, log, machine_info, package_version, packaged_gguf, percentile
from engine_prompts import warm_messages

ADMIN = "bench-gateway-profile-admin-key-0123456789"
MODEL = "smollm2-135m-instruct"


class Probe:
    """Spans of the request in flight, on the server side: requests are sequential, and each
    one's first step (the key lookup) starts its record."""

    def __init__(self) -> None:
        self.active = False
        self.current: dict[str, float] | None = None
        self.done: list[dict[str, float]] = []

    def begin(self) -> None:
        if self.active:
            self.current = defaultdict(float)
            self.done.append(self.current)

    def add(self, name: str, seconds: float) -> None:
        if self.current is not None:
            self.current[name] += seconds
            self.current[name + "#n"] += 1

    def at(self, name: str, when: float) -> None:
        if self.current is not None and name not in self.current:
            self.current[name] = when


def timed(probe: Probe, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            probe.add(name, time.perf_counter() - t0)

    return wrapper


def instrument(app: Any, probe: Probe) -> Any:
    """Wrap the services' steps; returns the llama.cpp engine (for the direct baseline)."""
    import alize.api.chat_completions as chat_route

    services = app.state.services
    tenancy = services.tenancy
    authenticate = timed(probe, "auth.key_lookup", tenancy.auth.authenticate)

    async def first_step(*args: Any, **kwargs: Any) -> Any:
        probe.begin()
        return await authenticate(*args, **kwargs)

    tenancy.auth.authenticate = first_step
    tenancy.keys_exist = timed(probe, "auth.keys_exist", tenancy.keys_exist)
    limiter = tenancy.limiter
    original_acquire = limiter.acquire

    async def acquire(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        lease = await original_acquire(*args, **kwargs)
        probe.add("limits.acquire", time.perf_counter() - t0)
        lease.release = timed(probe, "settle.limits_release", lease.release)
        return lease

    limiter.acquire = acquire
    budget = tenancy.budget
    for name in ("reserve", "settle", "release"):
        if hasattr(budget, name):
            setattr(budget, name, timed(probe, f"budget.{name}", getattr(budget, name)))
    metering = tenancy.metering
    for name in ("record", "record_settled"):
        if hasattr(metering, name):
            setattr(metering, name, timed(probe, f"metering.{name}", getattr(metering, name)))
    pipeline = services.pipeline
    pipeline.chat = timed(probe, "pipeline.chat (to headers)", pipeline.chat)
    generation = services.generation
    generation.prepare = timed(probe, "generation.prepare", generation.prepare)
    generation.start = timed(probe, "generation.start (slot)", generation.start)

    deployment = services.deployments.get(MODEL)
    engine = deployment.engine.replicas[0]
    deployment.engine.count_prompt_tokens = timed(probe, "count.total", deployment.engine.count_prompt_tokens)
    original_post = engine._post

    async def post(path: str, body: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return await original_post(path, body)
        finally:
            probe.add(f"count.worker {path}", time.perf_counter() - t0)

    engine._post = post
    original_generate = engine.generate

    async def generate(request: Any) -> AsyncIterator[Any]:
        t0 = time.perf_counter()
        probe.at("t.engine_send", t0)
        first = True
        async for delta in original_generate(request):
            if first:
                probe.add("hop.send_to_first_delta", time.perf_counter() - t0)
                probe.at("t.engine_first_delta", time.perf_counter())
                first = False
            yield delta
        probe.at("t.engine_last_delta", time.perf_counter())

    engine.generate = generate
    original_stream = chat_route.stream_chat

    def stream_chat(g: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        waited = [0.0]
        events = g.events

        async def watched() -> AsyncIterator[Any]:
            iterator = aiter(events)
            try:
                while True:
                    t0 = time.perf_counter()
                    try:
                        event = await anext(iterator)
                    except StopAsyncIteration:
                        return
                    finally:
                        waited[0] += time.perf_counter() - t0
                    yield event
            finally:
                with contextlib.suppress(Exception):
                    await events.aclose()

        g.events = watched()
        inner = original_stream(g, **kwargs)

        async def timed_outer() -> AsyncIterator[bytes]:
            total = 0.0
            iterator = aiter(inner)
            while True:
                before = waited[0]
                t0 = time.perf_counter()
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                total += (time.perf_counter() - t0) - (waited[0] - before)
                yield chunk
            probe.add("sse.encode (engine waits excluded)", total)

        return timed_outer()

    chat_route.stream_chat = stream_chat
    return engine


def client_requests(
    url: str, headers: dict[str, str], body: dict[str, Any], n: int
) -> list[dict[str, float]]:
    """``n`` sequential streamed requests, timed from the client's side. Run in a process of its
    own, so the client's work never holds the server's GIL (``time.perf_counter`` is the
    system's monotonic clock: both processes' timestamps compare)."""
    out: list[dict[str, float]] = []
    with httpx.Client(timeout=120, headers=headers) as client:
        for _ in range(n):
            record: dict[str, float] = {}
            t0 = time.perf_counter()
            record["t.send"] = t0
            with client.stream("POST", url, json=body) as r:
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:300]!r}")
                record["t.headers"] = time.perf_counter()
                for line in r.iter_lines():
                    now = time.perf_counter()
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        record["t.done"] = now
                        break
                    chunk = json.loads(data)
                    for choice in chunk.get("choices") or []:
                        if (choice.get("delta") or {}).get("content") and "t.first_content" not in record:
                            record["t.first_content"] = now
                        if choice.get("finish_reason"):
                            record["t.finish_chunk"] = now
                    if chunk.get("usage"):
                        record["t.usage_chunk"] = now
            out.append(record)
    return out


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` (a function of this module, JSON in and out) in a fresh process."""
    spec = json.dumps({"fn": fn.__name__, "args": args})
    done = subprocess.run(
        [sys.executable, __file__, "--child", spec],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the client process failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def child_main(spec: str) -> int:
    call = json.loads(spec)
    fn = {"client_requests": client_requests, "direct_baseline": direct_baseline}[call["fn"]]
    print(json.dumps(fn(*call["args"])))
    return 0


def _ms(values: list[float]) -> dict[str, float | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x * 1000, 3)

    return {
        "p50_ms": r(percentile(values, 50)),
        "p90_ms": r(percentile(values, 90)),
        "mean_ms": r(sum(values) / len(values)) if values else None,
    }


def breakdown(records: list[dict[str, float]]) -> dict[str, Any]:
    steps: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, list[float]] = defaultdict(list)
    derived: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        for name, value in rec.items():
            if name.startswith("t."):
                continue
            if name.endswith("#n"):
                calls[name[:-2]].append(value)
            else:
                steps[name].append(value)
        t = rec
        if "t.first_content" in t:
            derived["client TTFT (send → first content)"].append(t["t.first_content"] - t["t.send"])
        if "t.engine_send" in t:
            derived["send → engine request sent (gateway before the hop)"].append(
                t["t.engine_send"] - t["t.send"]
            )
        if "t.engine_first_delta" in t and "t.first_content" in t:
            derived["engine first delta → client first content"].append(
                t["t.first_content"] - t["t.engine_first_delta"]
            )
        if "t.engine_last_delta" in t and "t.done" in t:
            derived["engine last delta → client [DONE] (settling)"].append(
                t["t.done"] - t["t.engine_last_delta"]
            )
        if "t.done" in t:
            derived["client latency (send → [DONE])"].append(t["t.done"] - t["t.send"])
    return {
        "derived": {k: _ms(v) for k, v in derived.items()},
        "steps": {
            k: {**_ms(v), "calls_per_request": max(calls.get(k, [0]), default=0)} for k, v in steps.items()
        },
    }


def direct_baseline(address: str, secret: str, body: dict[str, Any], n: int) -> dict[str, Any]:
    """The same body straight to the worker's HTTP listener: TTFT with nothing in front."""
    direct = {k: v for k, v in body.items() if k != "model"}
    records = client_requests(
        address + "/v1/chat/completions", {"Authorization": f"Bearer {secret}"}, direct, n
    )
    ttfts = [r["t.first_content"] - r["t.send"] for r in records if "t.first_content" in r]
    latencies = [r["t.done"] - r["t.send"] for r in records if "t.done" in r]
    return {"ttft": _ms(ttfts), "latency": _ms(latencies)}


def top_functions(profile: cProfile.Profile, limit: int = 30) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in ("tottime", "cumulative"):
        buffer = io.StringIO()
        stats = pstats.Stats(profile, stream=buffer)
        stats.strip_dirs().sort_stats(key).print_stats(limit)
        lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        out[key] = lines[start : start + limit + 1]
    return out


async def serve_and_measure(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    import uvicorn

    from alize.api.app import create_app
    from alize.cli.settings import load_settings

    settings = load_settings()
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/ready")).status_code == 200:
                    break
            if time.monotonic() > deadline or task.done():
                raise RuntimeError("the server did not become ready")
            await asyncio.sleep(0.25)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        project = (
            await client.post(
                "/admin/api/projects",
                json={"name": "bench", "monthly_budget_micros": 10**12, "rpm": 100_000, "tpm": 10**9},
                headers=admin,
            )
        ).json()
        key = (
            await client.post(
                "/admin/api/keys",
                json={"name": "bench", "project_id": project["id"], "rpm": 100_000, "tpm": 10**9},
                headers=admin,
            )
        ).json()["key"]
        r = await client.patch(
            f"/admin/api/models/{MODEL}",
            json={"price_input_per_million": 100_000, "price_output_per_million": 200_000},
            headers=admin,
        )
        r.raise_for_status()
    probe = Probe()
    engine = instrument(app, probe)
    body = {
        "model": MODEL,
        "messages": warm_messages(),
        "max_tokens": args.max_tokens,
        "temperature": 0.7,
        "top_p": 0.95,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    chat_url = f"{url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}"}
    await asyncio.to_thread(in_child, client_requests, chat_url, headers, body, args.warmup)
    probe.active = True
    profile = cProfile.Profile() if args.cprofile else None
    if profile is not None:
        profile.enable()
    client = await asyncio.to_thread(in_child, client_requests, chat_url, headers, body, args.requests)
    if profile is not None:
        profile.disable()
    probe.active = False
    if len(probe.done) != len(client):
        raise RuntimeError(f"{len(probe.done)} requests seen by the server, {len(client)} sent")
    records = [
        {**server_side, **client_side} for server_side, client_side in zip(probe.done, client, strict=True)
    ]
    handle = engine._handle
    direct = await asyncio.to_thread(
        in_child, direct_baseline, handle.address, handle.secret, body, args.requests
    )
    result = breakdown(records)
    alize_ttft = result["derived"]["client TTFT (send → first content)"]["p50_ms"]
    result["direct_to_worker"] = direct
    result["added_ttft_p50_ms"] = (
        round(alize_ttft - direct["ttft"]["p50_ms"], 3) if alize_ttft and direct["ttft"]["p50_ms"] else None
    )
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        usage = (
            await client.get(
                f"/admin/api/projects/{project['id']}", headers={"Authorization": f"Bearer {ADMIN}"}
            )
        ).json()
    result["budget_after"] = usage.get("budget")
    if profile is not None:
        result["cprofile"] = top_functions(profile)
    server.should_exit = True
    await task
    return result


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        return child_main(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=40, help="measured requests (sequential)")
    ap.add_argument("--warmup", type=int, default=5, help="unmeasured requests first")
    ap.add_argument("--max-tokens", type=int, default=16, help="output tokens per request")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="as `alize serve`: uvloop"
    )
    ap.add_argument("--database-url", help="default: SQLite in a temporary data dir (as `alize serve`)")
    ap.add_argument("--cprofile", action="store_true", help="profile the serving thread too")
    ap.add_argument("--quick", action="store_true", help="10 requests, 2 warm-up")
    ap.add_argument("--output", type=Path, default=RESULTS_DIR / "gateway_profile.json")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.warmup = 10, 2
    data_dir = Path(tempfile.mkdtemp(prefix="alize-gwprof-"))
    env = {
        "ALIZE_DATA_DIR": str(data_dir),
        "ALIZE_ADMIN_KEY": ADMIN,
        "ALIZE_LOG_LEVEL": os.environ.get("GWPROF_LOG_LEVEL", "warning"),
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": MODEL}]),
        "ALIZE_CHAT__ENABLED": "false",
        "ALIZE_ENGINE__PARALLEL": str(args.parallel),
        "ALIZE_ENGINE__THREADS": str(args.threads),
        "ALIZE_ENGINE__CTX_PER_SLOT": "2048",
        "ALIZE_ENGINE__CACHE_RAM_MIB": "256",
    }
    if args.database_url:
        env["ALIZE_DATABASE_URL"] = args.database_url
    for name in [k for k in os.environ if k.startswith("ALIZE_")]:
        del os.environ[name]
    os.environ.update(env)
    from alize.config import EngineSettings

    if "quick_start_slots" in EngineSettings.model_fields:  # code since issue 25's cold-start work
        # profile the full engine: a cold start's small one would be swapped out mid-measurement
        os.environ["ALIZE_ENGINE__QUICK_START_SLOTS"] = "0"
    packaged_gguf()  # fail early without the model
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    machine = machine_info()
    try:
        if args.loop == "uvloop":
            import uvloop

            result = uvloop.run(serve_and_measure(args, data_dir))
        else:
            result = asyncio.run(serve_and_measure(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    report = {
        "benchmark": "gateway_profile",
        "date": started,
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "config": {
            "model": MODEL,
            "requests": args.requests,
            "warmup": args.warmup,
            "max_tokens": args.max_tokens,
            "threads": args.threads,
            "parallel": args.parallel,
            "loop": args.loop,
            "database": args.database_url or "sqlite (data dir)",
            "policies_on": [
                "api_keys",
                "rate_limits key+project (rpm, tpm)",
                "monthly_budget",
                "prices",
                "metering",
            ],
            "prompt": "engine_prompts.warm_messages() (prompt cache hits)",
        },
        "versions": {"alize": package_version("alize"), "xllamacpp": package_version("xllamacpp")},
        **result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {args.output}")
    print(
        json.dumps(
            {k: report[k] for k in ("added_ttft_p50_ms", "derived", "steps")}, indent=1, ensure_ascii=False
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
