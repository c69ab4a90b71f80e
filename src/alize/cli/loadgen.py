"""A serving load generator for any OpenAI-compatible endpoint, in the manner of ``vllm bench serve``.

Requests are streamed chat completions (``stream_options.include_usage``). Arrivals are either a
fixed number of closed-loop clients (``concurrency``) or a Poisson process of ``request_rate``
requests per second (exponential gaps, seeded), optionally capped by ``concurrency``. For each
request: TTFT is send → first content chunk; ITL the gaps between content chunks; TPOT
``(e2e - ttft) / (output tokens - 1)``; output tokens from the final usage (else the chunk
count). Goodput counts the requests that meet every SLO given (``ttft:MS``, ``tpot:MS``,
``e2el:MS``), per second, as vLLM defines it. Pure asyncio + httpx; the command is in
:mod:`alize.cli.bench`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

#: varied chat prompts, each asking for a long answer (so the output length is what max_tokens says)
BUILTIN_PROMPTS = (
    "Explain in detail how a refrigerator keeps food cold, step by step, from the compressor to the coils.",
    "Write a long story about a lighthouse keeper who finds a message in a bottle on a stormy night.",
    "Describe the water cycle for a class of ten-year-olds, with examples from everyday life.",
    "Compare trains, planes and cars for a 500 kilometre journey in detail, with pros and cons of each.",
    "Write a step-by-step guide to baking bread at home, from choosing flour to cooling the loaf.",
    "Explain what a computer does when you type a web address and press enter, in as much detail as you can",
    "Describe a walk through a busy market in a small coastal town early on a Saturday morning.",
    "List and explain ten habits that help people learn a new language faster, with one example each.",
)
_WORDS = (
    "river", "stone", "garden", "window", "orange", "music", "cloud", "engine", "paper", "forest",
    "bridge", "candle", "silver", "market", "letter", "winter", "planet", "coffee", "ladder", "harbor",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: list[dict[str, str]]
    max_tokens: int


@dataclass(slots=True)
class Result:
    ok: bool
    ttft_s: float | None = None
    e2el_s: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    itl_s: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1)


def load_prompts(
    dataset: str, n: int, *, output_len: int, input_len: int | None = None, seed: int = 0
) -> list[Prompt]:
    """``builtin`` (cycled), ``random`` (``input_len`` words drawn from a fixed vocabulary, about a
    token each), or a JSONL file of ``{"prompt": ...}`` / ``{"messages": [...]}`` lines, each with
    an optional ``max_tokens`` (else ``output_len``)."""
    rng = random.Random(seed)
    if dataset == "builtin":
        return [Prompt([{"role": "user", "content": BUILTIN_PROMPTS[i % len(BUILTIN_PROMPTS)]}], output_len)
                for i in range(n)]  # fmt: skip
    if dataset == "random":
        length = input_len or 128
        return [
            Prompt(
                [{"role": "user", "content": " ".join(rng.choice(_WORDS) for _ in range(length))}], output_len
            )
            for _ in range(n)
        ]
    rows = []
    for number, line in enumerate(Path(dataset).read_text().splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if "messages" in item:
            messages = item["messages"]
        elif "prompt" in item:
            messages = [{"role": "user", "content": str(item["prompt"])}]
        else:
            raise ValueError(f"{dataset}:{number}: a line needs 'prompt' or 'messages'")
        rows.append(Prompt(messages, int(item.get("max_tokens", output_len))))
    if not rows:
        raise ValueError(f"{dataset}: no prompts")
    return [rows[i % len(rows)] for i in range(n)]


def parse_goodput(specs: Sequence[str]) -> dict[str, float]:
    """``["ttft:500", "tpot:50"]`` → ``{"ttft": 0.5, "tpot": 0.05}`` (milliseconds in, seconds out)."""
    slos: dict[str, float] = {}
    for spec in specs:
        name, _, ms = spec.partition(":")
        if name not in ("ttft", "tpot", "e2el") or not ms:
            raise ValueError(f"goodput SLO {spec!r}: use ttft:MS, tpot:MS or e2el:MS")
        slos[name] = float(ms) / 1000.0
    return slos


def meets(result: Result, slos: dict[str, float]) -> bool:
    values = {"ttft": result.ttft_s, "tpot": result.tpot_s or 0.0, "e2el": result.e2el_s}
    return result.ok and all(values[k] is not None and values[k] <= v for k, v in slos.items())  # type: ignore[operator]


async def one_request(client: httpx.AsyncClient, model: str, prompt: Prompt, extra: dict[str, Any]) -> Result:
    """One streamed request. A connection the server closed while idle in the pool (llama.cpp's
    listener drops keep-alive connections after a few seconds) fails before any response and is
    retried once on a fresh one; any other failure is the request's."""
    result = await _attempt(client, model, prompt, extra)
    if result.error is not None and result.error.startswith("RemoteProtocolError") and result.ttft_s is None:
        result = await _attempt(client, model, prompt, extra)
    return result


async def _attempt(client: httpx.AsyncClient, model: str, prompt: Prompt, extra: dict[str, Any]) -> Result:
    body = {
        "model": model,
        "messages": prompt.messages,
        "max_tokens": prompt.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    started = time.perf_counter()
    result = Result(ok=False)
    last: float | None = None
    chunks = 0
    try:
        async with client.stream("POST", "chat/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = str(chunk["error"].get("message", "stream error"))[:200]
                    return result
                now = time.perf_counter()
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    chunks += 1
                    if last is None:
                        result.ttft_s = now - started
                    else:
                        result.itl_s.append(now - last)
                    last = now
                usage = chunk.get("usage")
                if usage:
                    result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    result.output_tokens = int(usage.get("completion_tokens") or 0)
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    result.e2el_s = time.perf_counter() - started
    result.output_tokens = result.output_tokens or chunks
    result.ok = True
    return result


async def run_load(
    base_url: str,
    model: str,
    prompts: Sequence[Prompt],
    *,
    api_key: str | None = None,
    concurrency: int | None = None,
    request_rate: float | None = None,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 600.0,
) -> tuple[float, list[Result]]:
    """Send every prompt; returns the wall time of the run and one result per prompt, in order."""
    if concurrency is None and request_rate is None:
        raise ValueError("give a concurrency, a request rate, or both")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limit = concurrency or len(prompts)
    results: list[Result | None] = [None] * len(prompts)
    done = 0
    gate = asyncio.Semaphore(limit)
    rng = random.Random(seed)
    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        headers=headers,
        timeout=httpx.Timeout(timeout_s, connect=10.0),
        limits=httpx.Limits(max_connections=limit + 4, max_keepalive_connections=limit + 4),
    ) as client:

        async def send(index: int) -> None:
            nonlocal done
            async with gate:
                results[index] = await one_request(client, model, prompts[index], extra or {})
            done += 1
            if progress is not None:
                progress(done, len(prompts))

        started = time.perf_counter()
        tasks = []
        for index in range(len(prompts)):
            tasks.append(asyncio.create_task(send(index)))
            if request_rate is not None and index < len(prompts) - 1:
                await asyncio.sleep(rng.expovariate(request_rate))
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - started
    return duration, [r if r is not None else Result(ok=False, error="not sent") for r in results]


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, median and p90/p99, in milliseconds."""
    ms = [v * 1000.0 for v in values]

    def rnd(x: float | None) -> float | None:
        return round(x, 2) if x is not None else None

    return {
        "mean": rnd(sum(ms) / len(ms)) if ms else None,
        "p50": rnd(_pct(ms, 50)),
        "p90": rnd(_pct(ms, 90)),
        "p99": rnd(_pct(ms, 99)),
    }


def summarize(
    duration_s: float, results: Sequence[Result], slos: dict[str, float] | None = None
) -> dict[str, Any]:
    """The report: counts, throughputs, and TTFT / TPOT / ITL / E2EL statistics in ms."""
    ok = [r for r in results if r.ok]
    output = sum(r.output_tokens for r in ok)
    prompt = sum(r.prompt_tokens for r in ok)
    report: dict[str, Any] = {
        "duration_s": round(duration_s, 3),
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if r.error})[:5],
        "prompt_tokens": prompt,
        "output_tokens": output,
        "request_throughput": round(len(ok) / duration_s, 4) if duration_s else None,
        "output_throughput": round(output / duration_s, 2) if duration_s else None,
        "total_token_throughput": round((prompt + output) / duration_s, 2) if duration_s else None,
        "ttft_ms": _stats([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": _stats([t for r in ok if (t := r.tpot_s) is not None]),
        "itl_ms": _stats([gap for r in ok for gap in r.itl_s]),
        "e2el_ms": _stats([r.e2el_s for r in ok]),
    }
    if slos:
        good = sum(1 for r in results if meets(r, slos))
        report["goodput"] = {
            "slos_ms": {k: v * 1000 for k, v in slos.items()},
            "good_requests": good,
            "requests_per_s": round(good / duration_s, 4) if duration_s else None,
        }
    return report


def per_request(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Each request's figures (for plots and JSON), without the raw token gaps."""
    return [{k: v for k, v in asdict(r).items() if k != "itl_s"} | {"tpot_s": r.tpot_s} for r in results]
