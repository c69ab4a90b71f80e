"""Measure a model's speed on this machine, for the ``measured`` figures of its card.

What is measured, on the loaded engine itself (no HTTP, no gateway: the figures describe the model
and engine settings, not the network):

* **prefill**: a fixed English prompt of about ``prompt_tokens`` tokens, one token generated;
  prompt tokens ÷ time to the first token. Every run starts with a different number so a prompt
  cache cannot answer from memory.
* **decode**: ``decode_tokens`` tokens generated for one sequence (temperature 1, fixed seed, so a
  model rarely stops early); (tokens − 1) ÷ time from the first token to the last, which leaves
  the prefill out.
* **embeddings models**: the prompt encoded; tokens ÷ time, as the prefill figure.

Each figure is the median of ``runs`` runs after one warm-up run. A deployment serving the model
is used as it is (one of its slots is taken through its fair queue, so clients are not starved);
otherwise the model is loaded for the measurement with the default engine settings and unloaded
afterwards. The machine is described from ``/proc`` (CPU model, cores, memory).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alize.catalog.cards import MeasuredFigures
from alize.deployments.manager import Deployment
from alize.domain import EngineInfo, GenerationRequest, Message, SamplingParams
from alize.errors import InvalidRequestError

SENTENCE = "The wind turned west over the harbour, and the boats came home before the rain. "


@dataclass(frozen=True, slots=True)
class BenchmarkPlan:
    prompt_tokens: int = 256
    decode_tokens: int = 64
    runs: int = 3

    def __post_init__(self) -> None:
        if not (
            16 <= self.prompt_tokens <= 8192 and 8 <= self.decode_tokens <= 1024 and 1 <= self.runs <= 10
        ):
            raise InvalidRequestError(
                "benchmark limits: prompt_tokens 16-8192, decode_tokens 8-1024, runs 1-10", param="runs"
            )


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows: the one reading of
    it for every figure Alizé records (benchmarks, evaluations, load tests)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: the instruction sets the CPU kernels of llama.cpp, onnxruntime and PyTorch choose between
#: (int8 and bf16 paths differ most): a figure is only comparable with the same ones present
KERNEL_FLAGS = (
    "sse4_2", "fma", "f16c", "avx", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni",
    "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "sve",
)  # fmt: skip


def cpu_flags() -> list[str]:
    """The :data:`KERNEL_FLAGS` this CPU reports (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in KERNEL_FLAGS if flag in present]
    except OSError:
        pass
    return []


def describe_machine() -> str:
    """``Intel Xeon ... , 2 CPUs, 23 GiB RAM, Linux x86_64``: what a reader needs to compare."""
    cpu = cpu_model()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024**2:.0f} GiB RAM"
                break
    except OSError:
        pass
    return f"{cpu}, {cores} CPUs{memory}, {platform.system()} {platform.machine()}"[:300]


def _request(info: EngineInfo, text: str, max_tokens: int, seed: int) -> GenerationRequest:
    params = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed)
    if info.supports_chat:
        return GenerationRequest("bench", params, messages=(Message(role="user", content=text),))
    return GenerationRequest("bench", params, prompt=text)


async def _prompt(deployment: Deployment, info: EngineInfo, plan: BenchmarkPlan) -> str:
    """The fixed text, repeated to about ``plan.prompt_tokens`` tokens (within the context)."""
    engine = deployment.engine
    target = min(plan.prompt_tokens, info.context_length - plan.decode_tokens - 32)
    if target < 16:
        raise InvalidRequestError(
            f"the context ({info.context_length} tokens) is too small for this benchmark",
            param="prompt_tokens",
        )

    async def count(text: str) -> int:
        if _generates(info):
            return await engine.count_prompt_tokens(_request(info, text, 1, 0))
        return (await engine.embed([text])).prompt_tokens

    one, two = await count(SENTENCE), await count(SENTENCE * 2)
    per_sentence = max(1, two - one)
    overhead = max(0, one - per_sentence)  # chat template and special tokens
    return SENTENCE * max(1, (target - overhead) // per_sentence)


def _generates(info: EngineInfo) -> bool:
    """Embeddings-only engines are measured by encoding; every other one by generating."""
    return info.supports_chat or not info.supports_embeddings


async def _time_generation(
    deployment: Deployment, request: GenerationRequest
) -> tuple[int, int, float, float]:
    """(prompt tokens, generated tokens, seconds to the first token, seconds first → last)."""
    started = time.perf_counter()
    first = last = 0.0
    prompt = generated = 0
    stream = deployment.engine.generate(request)
    try:
        async for delta in stream:
            now = time.perf_counter()
            if delta.text or delta.tokens:
                first = first or now
                last = now
            if delta.usage is not None:
                prompt, generated = delta.usage.prompt_tokens, delta.usage.completion_tokens
    finally:
        await stream.aclose()
    first = first or time.perf_counter()
    return prompt, generated, first - started, max(last - first, 1e-9)


async def measure(deployment: Deployment, plan: BenchmarkPlan) -> MeasuredFigures:
    """Run the plan on a loaded deployment (the caller holds a slot or owns the deployment)."""
    info, _ = await deployment.ensure_loaded()
    text = await _prompt(deployment, info, plan)
    prefill: list[float] = []
    decode: list[float] = []
    prompt_tokens = decode_tokens = 0
    for run in range(plan.runs + 1):  # run 0 warms caches and allocators up
        unique = f"{run + 1}. {text}"
        if _generates(info):
            prompt_tokens, _, ttft, _ = await _time_generation(deployment, _request(info, unique, 1, run))
            _, generated, _, span = await _time_generation(
                deployment, _request(info, f"{run + 1}. {SENTENCE}", plan.decode_tokens, run)
            )
            if run:
                prefill.append(prompt_tokens / ttft)
                if generated > 1:
                    decode.append((generated - 1) / span)
                    decode_tokens = generated
        else:
            started = time.perf_counter()
            prompt_tokens = (await deployment.engine.embed([unique])).prompt_tokens
            if run:
                prefill.append(prompt_tokens / (time.perf_counter() - started))
    return MeasuredFigures(
        prefill_tokens_per_second=round(statistics.median(prefill), 1),
        decode_tokens_per_second=round(statistics.median(decode), 1) if decode else None,
        prompt_tokens=max(1, prompt_tokens),
        decode_tokens=decode_tokens,
        runs=plan.runs,
        engine=deployment.spec.engine.kind,
        threads=deployment.spec.engine.threads if deployment.spec.engine.kind != "remote" else None,
        machine=describe_machine(),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
