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

Run ``python bench/engine.py --help`` for options; bench/README.md has the exact commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from _common import (
    CACHE_DIR,
    PACKAGED_MODEL_ID,
    REPO_ROOT,
    RESULTS_DIR,
    ManagedServer,
    free_port,
    machine_info,
    package_version,
    packaged_gguf,
    percentile,
)

SYSTEMS = ("alize", "xllamacpp", "llama-cpp-python")
LABELS = {
    "alize": "Alizé (HTTP, streaming)",
    "xllamacpp": "xllamacpp in-process",
    "llama-cpp-python": "llama-cpp-python server",
}
COLORS = {"alize": "tab:blue", "xllamacpp": "tab:green", "llama-cpp-python": "tab:orange"}
PHASES = ("cold", "warm")

LLCPP_VENV = CACHE_DIR / "llcpp-venv"
WHEEL_DIR = CACHE_DIR / "wheels"
LOG_DIR = CACHE_DIR / "logs"

# Fixed chat prompts: varied topics, each asking for a long answer so that 128 tokens come out even where
# the end-of-sequence token cannot be suppressed.
SYSTEM_PROMPT = "You are a helpful assistant. Answer thoroughly, in full sentences."
PROMPTS: tuple[str, ...] = (
    "Explain in detail how a refrigerator keeps food cold, step by step, from the compressor to the coils.",
    "Write a long story about a lighthouse keeper who finds a message in a bottle on a stormy night.",
    "Describe the water cycle for a class of ten-year-olds, with examples from everyday life.",
    "Compare trains, planes and cars for a 500 kilometre journey in detail, with pros and cons of each.",
    "Write a step-by-step guide to baking bread at home, from choosing flour to cooling the loaf.",
    "Explain what a computer does when you type a web address and press enter, in as much detail as you can",
    "Describe a walk through a busy market in a small coastal town early on a Saturday morning.",
    "List and explain ten habits that help people learn a new language faster, with one example each.",
)
WARM_PROMPT_INDEX = 0
WARM_NONCE = "5f3c9a0e7b214d86"  # same shape as a cold nonce, so cold and warm prompts are as long

EOG_TEXTS = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- requests


def cold_messages(index: int) -> list[dict[str, str]]:
    """A conversation nobody has seen: a nonce is the very first text, so no prompt prefix is cached."""
    nonce = uuid.uuid4().hex[:16]
    return [
        {"role": "system", "content": f"[session {nonce}] {SYSTEM_PROMPT}"},
        {"role": "user", "content": PROMPTS[index % len(PROMPTS)]},
    ]


def warm_messages() -> list[dict[str, str]]:
    """The one fixed conversation repeated for warm runs."""
    return [
        {"role": "system", "content": f"[session {WARM_NONCE}] {SYSTEM_PROMPT}"},
        {"role": "user", "content": PROMPTS[WARM_PROMPT_INDEX]},
    ]


def eog_token_ids(gguf_path: Path) -> list[int]:
    """End-of-generation token ids of the model (what llama.cpp's ``ignore_eos`` bans)."""
    try:
        import gguf  # type: ignore[import-untyped]

        reader = gguf.GGUFReader(str(gguf_path))
        ids: set[int] = set()
        eos = reader.fields.get("tokenizer.ggml.eos_token_id")
        if eos is not None:
            ids.add(int(eos.parts[eos.data[0]][0]))
        tokens = reader.fields["tokenizer.ggml.tokens"]
        for tok_id, part in enumerate(tokens.data):
            if bytes(tokens.parts[part]).decode(errors="replace") in EOG_TEXTS:
                ids.add(tok_id)
        return sorted(ids)
    except Exception as exc:  # the package is optional; SmolLM2's ids are known
        log(f"could not read EOG ids from the GGUF ({exc}); using SmolLM2's 0 and 2")
        return [0, 2]


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


class StreamTally:
    """Accounts for the chunks of one streamed chat completion (OpenAI chunk shape)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.ttft_s: float | None = None
        self.content_chunks = 0
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: str | None = None

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
        )


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


# ---------------------------------------------------------------------------------------------- systems


class System(ABC):
    """One thing under test: set up, warmed up, driven with batches, torn down."""

    key: str

    def __init__(self, args: argparse.Namespace, gguf_path: Path, eog_ids: list[int]) -> None:
        self.args = args
        self.gguf_path = gguf_path
        self.eog_ids = eog_ids
        self.model = "bench"
        self.eos_mode = "ignore_eos"
        self.info: dict[str, Any] = {"label": LABELS[self.key]}

    def body(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.args.temperature,
            "top_p": 0.95,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.eos_mode == "ignore_eos":
            body["ignore_eos"] = True
        elif self.eos_mode == "logit_bias":
            body["logit_bias"] = {str(t): -100 for t in self.eog_ids}
        return body

    @abstractmethod
    async def setup(self) -> None: ...

    @abstractmethod
    async def run_batch(self, bodies: list[list[dict[str, Any]]]) -> tuple[float, list[Req]]:
        """Each inner list is one client's requests, sent one after another; returns (wall_s, results)."""

    @abstractmethod
    async def teardown(self) -> None: ...

    async def probe_eos_modes(self, modes: Sequence[str]) -> None:
        """Use the first way of forcing ``max_tokens`` output that the system accepts (4xx = refused)."""
        for mode in modes:
            self.eos_mode = mode
            _, res = await self.run_batch([[self.body(warm_messages(), 4)]])
            err = res[0].error
            if err is None:
                self.info["eos_mode"] = mode
                return
            log(f"{self.key}: eos mode {mode!r} refused ({err}); trying the next")
            if not err.startswith("HTTP 4"):
                raise RuntimeError(f"{self.key}: probe request failed: {err}")
        raise RuntimeError(f"{self.key}: every probe request failed")


class HttpSystem(System):
    """An OpenAI-compatible server reached over HTTP with SSE streaming."""

    def __init__(self, args: argparse.Namespace, gguf_path: Path, eog_ids: list[int]) -> None:
        super().__init__(args, gguf_path, eog_ids)
        self.base_url = ""
        self.api_key: str | None = None
        self.client: httpx.AsyncClient | None = None
        self.server: ManagedServer | None = None

    def open_client(self) -> None:
        n = max(self.args.concurrency) + 4
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            timeout=httpx.Timeout(
                connect=10.0, read=self.args.read_timeout, write=30.0, pool=self.args.request_timeout
            ),
        )

    async def one(self, body: dict[str, Any]) -> Req:
        assert self.client is not None
        max_tokens = int(body["max_tokens"])
        t0 = time.perf_counter()
        tally = StreamTally(t0)
        try:
            async with (
                asyncio.timeout(self.args.request_timeout),
                self.client.stream("POST", "/v1/chat/completions", json=body) as resp,
            ):
                if resp.status_code != 200:
                    text = (await resp.aread()).decode(errors="replace")[:300]
                    return tally.result(max_tokens, time.perf_counter(), f"HTTP {resp.status_code}: {text}")
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    tally.feed(json.loads(data), time.perf_counter())
                    if tally.error:
                        break
        except (httpx.HTTPError, TimeoutError, json.JSONDecodeError) as exc:
            return tally.result(max_tokens, time.perf_counter(), f"{type(exc).__name__}: {exc}"[:300])
        return tally.result(max_tokens, time.perf_counter())

    async def run_batch(self, bodies: list[list[dict[str, Any]]]) -> tuple[float, list[Req]]:
        results: list[Req] = []

        async def client_loop(mine: list[dict[str, Any]]) -> None:
            for body in mine:
                results.append(await self.one(body))

        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(b) for b in bodies))
        return time.perf_counter() - t0, results

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
            self.server = None

    async def teardown(self) -> None:
        await self.stop()


class AlizeSystem(HttpSystem):
    key = "alize"
    data_dir: Path | None = None

    async def teardown(self) -> None:
        await self.stop()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def command(self, port: int) -> list[str]:
        template = self.args.alize_cmd
        if not template:
            exe = Path(sys.executable).with_name("alize")
            template = (
                f"{shlex.quote(str(exe))} serve --host 127.0.0.1 --port {{port}}"
                if exe.exists()
                else "{python} -m alize.cli.main serve --host 127.0.0.1 --port {port}"
            )
        return shlex.split(template.format(port=port, python=shlex.quote(sys.executable)))

    async def setup(self) -> None:
        self.model = self.args.alize_model
        self.api_key = self.args.alize_api_key or os.environ.get("ALIZE_BENCH_API_KEY")
        self.info["version"] = package_version("alize")
        if self.args.alize_url:
            self.base_url = self.args.alize_url.rstrip("/")
            self.info["url"] = self.base_url
            self.info["started_by_bench"] = False
        else:
            port = free_port(self.args.port)
            self.base_url = f"http://127.0.0.1:{port}"
            data_dir = self.data_dir = CACHE_DIR / f"alize-data-{os.getpid()}"
            env = dict(os.environ)
            env.update(
                {
                    "ALIZE_HOST": "127.0.0.1",
                    "ALIZE_PORT": str(port),
                    "ALIZE_DATA_DIR": str(data_dir),
                    "ALIZE_LOG_LEVEL": "warning",
                    "ALIZE_ENGINE__PARALLEL": str(self.args.parallel),
                    "ALIZE_ENGINE__THREADS": str(self.args.threads),
                    "ALIZE_ENGINE__CTX_PER_SLOT": str(self.args.ctx_per_slot),
                    "ALIZE_ENGINE__BATCH_SIZE": str(self.args.batch_size),
                    "ALIZE_ENGINE__CACHE_RAM_MIB": str(self.args.cache_ram_mib),
                }
            )
            cmd = self.command(port)
            alize_env = {k: v for k, v in env.items() if k.startswith("ALIZE_")}
            self.info.update({"command": shlex.join(cmd), "env": alize_env, "started_by_bench": True})
            self.server = ManagedServer("alize", cmd, env, LOG_DIR / "alize.log")
            log(f"alize: starting {shlex.join(cmd)}")
            self.server.start()
            waited = await asyncio.to_thread(
                self.server.wait_ready, f"{self.base_url}/ready", self.args.ready_timeout
            )
            self.info["ready_after_s"] = round(waited, 2)
            log(f"alize: ready after {waited:.1f}s")
        self.open_client()
        await self.probe_eos_modes(["ignore_eos", "logit_bias", "none"])


class LlcppSystem(HttpSystem):
    key = "llama-cpp-python"

    async def setup(self) -> None:
        python, version, build = await asyncio.to_thread(ensure_llcpp, self.args)
        self.info.update({"version": version, "python": str(python), "wheel_build": build})
        port = free_port(self.args.port + 1)
        self.base_url = f"http://127.0.0.1:{port}"
        self.model = PACKAGED_MODEL_ID
        cmd = [
            str(python), "-m", "llama_cpp.server",
            "--model", str(self.gguf_path),
            "--model_alias", PACKAGED_MODEL_ID,
            "--n_ctx", str(self.args.ctx_per_slot),
            "--n_batch", str(self.args.batch_size),
            "--n_threads", str(self.args.threads),
            "--n_threads_batch", str(self.args.threads),
            "--interrupt_requests", "False",
            "--verbose", "False",
            "--host", "127.0.0.1",
            "--port", str(port),
        ]  # fmt: skip
        self.info["command"] = shlex.join(cmd)
        self.info["notes"] = (
            "one llama context, one sequence at a time: concurrent requests wait in turn "
            "(interrupt_requests=False), no continuous batching; ignore_eos is not supported, "
            "so end-of-generation tokens are banned with logit_bias (what llama.cpp's ignore_eos does); "
            "no usage in the stream, so tokens = max_tokens when finish_reason=length, else content chunks"
        )
        self.server = ManagedServer("llama-cpp-python", cmd, None, LOG_DIR / "llama-cpp-python.log")
        log(f"llama-cpp-python: starting {shlex.join(cmd)}")
        self.server.start()
        waited = await asyncio.to_thread(
            self.server.wait_ready, f"{self.base_url}/v1/models", self.args.ready_timeout
        )
        self.info["ready_after_s"] = round(waited, 2)
        log(f"llama-cpp-python: ready after {waited:.1f}s")
        self.open_client()
        await self.probe_eos_modes(["logit_bias", "none"])


class InprocSystem(System):
    key = "xllamacpp"

    def __init__(self, args: argparse.Namespace, gguf_path: Path, eog_ids: list[int]) -> None:
        super().__init__(args, gguf_path, eog_ids)
        self.server: Any = None

    def _load(self) -> None:
        import xllamacpp

        a = self.args
        p = xllamacpp.CommonParams()
        p.model.path = str(self.gguf_path)
        p.n_parallel = a.parallel
        p.n_ctx = a.parallel * a.ctx_per_slot
        p.kv_unified = a.kv_unified
        p.n_batch = a.batch_size
        p.cache_ram_mib = a.cache_ram_mib
        p.cpuparams.n_threads = a.threads
        p.cpuparams_batch.n_threads = a.threads
        p.ui = False
        p.endpoint_slots = False
        p.api_keys = [uuid.uuid4().hex]  # its own HTTP listener stays closed to everyone
        p.verbosity = -1
        self.server = xllamacpp.Server(p)

    async def setup(self) -> None:
        t0 = time.perf_counter()
        await asyncio.to_thread(self._load)
        a = self.args
        self.info.update(
            {
                "version": package_version("xllamacpp"),
                "params": {
                    "n_parallel": a.parallel,
                    "n_ctx": a.parallel * a.ctx_per_slot,
                    "kv_unified": a.kv_unified,
                    "n_batch": a.batch_size,
                    "cache_ram_mib": a.cache_ram_mib,
                    "n_threads": a.threads,
                },
                "load_s": round(time.perf_counter() - t0, 2),
                "notes": "Server.handle_chat_completions(stream=True) from one Python thread per client",
            }
        )
        await self.probe_eos_modes(["ignore_eos"])

    def one(self, body: dict[str, Any]) -> Req:
        max_tokens = int(body["max_tokens"])
        t0 = time.perf_counter()
        tally = StreamTally(t0)
        deadline = t0 + self.args.request_timeout

        def on_chunk(chunk: Any) -> bool:
            now = time.perf_counter()
            tally.feed(chunk, now)
            return now > deadline or tally.error is not None  # True stops the request

        try:
            ret = self.server.handle_chat_completions(body, on_chunk)
        except Exception as exc:
            return tally.result(max_tokens, time.perf_counter(), f"{type(exc).__name__}: {exc}"[:300])
        error = None
        if isinstance(ret, dict) and "error" in ret:
            error = f"error: {json.dumps(ret['error'])[:300]}"
        elif time.perf_counter() > deadline:
            error = f"timed out after {self.args.request_timeout}s"
        return tally.result(max_tokens, time.perf_counter(), error)

    def _run_threads(self, bodies: list[list[dict[str, Any]]]) -> tuple[float, list[Req]]:
        results: list[Req] = []
        lock = threading.Lock()

        def client_loop(mine: list[dict[str, Any]]) -> None:
            for body in mine:
                r = self.one(body)
                with lock:
                    results.append(r)

        threads = [threading.Thread(target=client_loop, args=(b,), daemon=True) for b in bodies]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0, results

    async def run_batch(self, bodies: list[list[dict[str, Any]]]) -> tuple[float, list[Req]]:
        return await asyncio.to_thread(self._run_threads, bodies)

    async def teardown(self) -> None:
        self.server = None
        gc.collect()


SYSTEM_CLASSES: dict[str, type[System]] = {
    "alize": AlizeSystem,
    "xllamacpp": InprocSystem,
    "llama-cpp-python": LlcppSystem,
}


# -------------------------------------------------------------------------------- llama-cpp-python venv


def _llcpp_version(python: Path) -> str | None:
    if not python.exists():
        return None
    code = "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def _wheel_build_info() -> dict[str, Any] | None:
    path = WHEEL_DIR / "build-info.json"
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads(path.read_text()))
    return None


def ensure_llcpp(args: argparse.Namespace) -> tuple[Path, str, dict[str, Any] | None]:
    """A python with llama-cpp-python[server]: the temporary venv, installed from the cached wheel if any."""
    if args.llcpp_python:
        python = Path(args.llcpp_python)
        version = _llcpp_version(python)
        if version is None:
            raise SystemExit(f"{python} cannot import llama_cpp.server")
        return python, version, _wheel_build_info()
    python = LLCPP_VENV / "bin" / "python"
    version = _llcpp_version(python)
    if version is not None:
        return python, version, _wheel_build_info()
    if not python.exists():
        log(f"llama-cpp-python: creating venv {LLCPP_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(LLCPP_VENV)], check=True, timeout=600)
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    wheels = sorted(WHEEL_DIR.glob("llama_cpp_python-*.whl"))
    if not wheels:
        env = dict(os.environ, CMAKE_ARGS=args.llcpp_cmake_args)
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(os.cpu_count())
        cmd = [str(python), "-m", "pip", "wheel", "--no-deps", "-w", str(WHEEL_DIR), args.llcpp_spec]
        log(f"llama-cpp-python: building a wheel from source (minutes): {shlex.join(cmd)}")
        t0 = time.perf_counter()
        with (LOG_DIR / "llcpp-build.log").open("w") as out:
            subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=3600)
        wheels = sorted(WHEEL_DIR.glob("llama_cpp_python-*.whl"))
        info = {
            "wheel": wheels[-1].name,
            "build_s": round(time.perf_counter() - t0, 1),
            "cmake_args": args.llcpp_cmake_args,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (WHEEL_DIR / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
    wheel = wheels[-1]
    log(f"llama-cpp-python: installing {wheel.name}[server] into {LLCPP_VENV}")
    cmd = [str(python), "-m", "pip", "install", "-q", f"{wheel}[server]"]
    subprocess.run(cmd, check=True, timeout=1800)
    version = _llcpp_version(python)
    if version is None:
        raise SystemExit("llama-cpp-python installed but llama_cpp.server does not import")
    return python, version, _wheel_build_info()


# ------------------------------------------------------------------------------------------- the run


async def bench_system(system: System, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"info": system.info, "results": {}, "loadavg_at_start": _loadavg()}
    try:
        await system.setup()
        warm_up_tokens = 8
        log(f"{system.key}: warming up")
        await system.run_batch([[system.body(cold_messages(i), warm_up_tokens)] for i in range(2)])
        n_max = max(args.concurrency)
        wall, res = await system.run_batch(
            [[system.body(cold_messages(i), warm_up_tokens)] for i in range(n_max)]
        )
        bad = [r.error for r in res if r.error]
        if bad:
            log(f"{system.key}: {len(bad)} warm-up errors, e.g. {bad[0]}")
        for n in args.concurrency:
            cases: dict[str, Any] = {}
            cold = [
                [system.body(cold_messages(w + r * n), args.max_tokens) for r in range(args.rounds)]
                for w in range(n)
            ]
            wall, res = await system.run_batch(cold)
            cases["cold"] = summarize(res, wall, n, args.rounds, args.max_tokens)
            # Prime: the same batch once, unmeasured, so every slot (or the prompt cache) holds the prompt.
            await system.run_batch([[system.body(warm_messages(), args.max_tokens)] for _ in range(n)])
            one = system.body(warm_messages(), args.max_tokens)
            warm = [[dict(one) for _ in range(args.rounds)] for _ in range(n)]
            wall, res = await system.run_batch(warm)
            cases["warm"] = summarize(res, wall, n, args.rounds, args.max_tokens)
            out["results"][str(n)] = cases
            for phase, c in cases.items():
                log(
                    f"{system.key} c={n} {phase}: {c['tokens_per_s']} tok/s, TTFT p50 {c['ttft_p50_ms']} ms "
                    f"p99 {c['ttft_p99_ms']} ms, {c['completion_tokens']} tokens, {c['errors']} errors, "
                    f"cached {c['cached_tokens_mean']}/{c['prompt_tokens_mean']}"
                )
    except Exception as exc:
        out["failed"] = f"{type(exc).__name__}: {exc}"
        log(f"{system.key}: FAILED: {out['failed']}")
    finally:
        await system.teardown()
        out["loadavg_at_end"] = _loadavg()
    return out


def _loadavg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def versions() -> dict[str, Any]:
    return {
        "alize": package_version("alize"),
        "xllamacpp": package_version("xllamacpp"),
        "httpx": package_version("httpx"),
        "llama-cpp-python": _llcpp_version(LLCPP_VENV / "bin" / "python"),
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
            "eog_token_ids": eog,
            "prompts": list(PROMPTS),
            "system_prompt": SYSTEM_PROMPT,
            "warm_prompt_index": WARM_PROMPT_INDEX,
            "method": (
                "At concurrency N, N clients each send `rounds` streaming requests back to back. "
                "tokens_per_s = completion tokens of the batch / wall time of the batch. "
                "TTFT = send to first content chunk. cold: a fresh nonce starts every conversation. "
                "warm: one fixed conversation, after an unmeasured priming batch at the same concurrency."
            ),
        },
        "systems": {},
    }
    for key in args.systems:
        system = SYSTEM_CLASSES[key](args, gguf_path, eog)
        log(f"=== {key} ===")
        report["systems"][key] = await bench_system(system, args)
        write_json(report, json_path)  # keep what we have if a later system fails
    report["versions"] = versions()
    return report


# ----------------------------------------------------------------------------------------------- output


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def _case(report: dict[str, Any], key: str, n: int, phase: str) -> dict[str, Any] | None:
    case = report["systems"].get(key, {}).get("results", {}).get(str(n), {}).get(phase)
    return dict(case) if case else None


def _flag(case: dict[str, Any]) -> str:
    return "*" if case.get("errors") or case.get("short_requests") else ""


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "—"


def markdown(report: dict[str, Any]) -> str:
    systems = [k for k in SYSTEMS if k in report["systems"]]
    cfg = report["config"]
    m = report["machine"]
    v = report.get("versions", {})
    levels = cfg["concurrency"]
    lines = [
        f"Model {cfg['model']}, {cfg['max_tokens']} output tokens per request, {cfg['threads']} threads, "
        f"{cfg['parallel']} slots, {cfg['rounds']} request(s) per client per batch. "
        f"{m['cpu_model']}, {m['nproc']} CPUs, load average at start {m.get('loadavg_at_start')}; "
        f"{report['date']}.",
        f"Versions: xllamacpp {v.get('xllamacpp')}, llama-cpp-python {v.get('llama-cpp-python')}, "
        f"alize {v.get('alize')}.",
        "",
        "**Aggregate output tokens/s** (higher is better)",
        "",
    ]
    head = ["Concurrency", "Prompt", *(LABELS[k] for k in systems)]
    has_ratio_inproc = "alize" in systems and "xllamacpp" in systems
    has_ratio_llcpp = "alize" in systems and "llama-cpp-python" in systems
    if has_ratio_inproc:
        head.append("Alizé / in-process")
    if has_ratio_llcpp:
        head.append("Alizé / llama-cpp-python")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in levels:
        for phase in PHASES:
            row = [str(n), phase]
            tps: dict[str, float | None] = {}
            for k in systems:
                c = _case(report, k, n, phase)
                tps[k] = c["tokens_per_s"] if c else None
                ok = c is not None and c["tokens_per_s"] is not None
                row.append(f"{c['tokens_per_s']:.1f}{_flag(c)}" if c and ok else "—")
            if has_ratio_inproc:
                row.append(_ratio(tps["alize"], tps["xllamacpp"]))
            if has_ratio_llcpp:
                row.append(_ratio(tps["alize"], tps["llama-cpp-python"]))
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "**Time to first token, p50 / p99 in ms** (lower is better)", ""]
    head = ["Concurrency", "Prompt", *(LABELS[k] for k in systems)]
    if has_ratio_inproc:
        head.append("Alizé / in-process (p50)")
    if has_ratio_llcpp:
        head.append("Alizé / llama-cpp-python (p50)")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in levels:
        for phase in PHASES:
            row = [str(n), phase]
            p50: dict[str, float | None] = {}
            for k in systems:
                c = _case(report, k, n, phase)
                p50[k] = c["ttft_p50_ms"] if c else None
                if c and c["ttft_p50_ms"] is not None:
                    row.append(f"{c['ttft_p50_ms']:.0f} / {c['ttft_p99_ms']:.0f}{_flag(c)}")
                else:
                    row.append("—")
            if has_ratio_inproc:
                row.append(_ratio(p50["alize"], p50["xllamacpp"]))
            if has_ratio_llcpp:
                row.append(_ratio(p50["alize"], p50["llama-cpp-python"]))
            lines.append("| " + " | ".join(row) + " |")
    notes = ["", "\\* errors or requests shorter than max_tokens in this cell; see the JSON."]
    for k in systems:
        s = report["systems"][k]
        if s.get("failed"):
            notes.append(f"- {LABELS[k]}: failed: {s['failed']}")
        eos = s.get("info", {}).get("eos_mode")
        if eos and eos != "ignore_eos":
            notes.append(f"- {LABELS[k]}: output length forced with `{eos}`.")
    if "llama-cpp-python" in systems:
        notes.append(
            "- llama-cpp-python's server decodes one sequence at a time; concurrent requests wait in turn."
        )
    return "\n".join(lines + notes) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["config"]["concurrency"]
    fig, (ax_tps, ax_ttft) = plt.subplots(1, 2, figsize=(12, 4.8))
    for key in SYSTEMS:
        if key not in report["systems"]:
            continue
        for phase, style in (("cold", "-"), ("warm", "--")):
            xs, tps, ttft = [], [], []
            for n in levels:
                c = _case(report, key, n, phase)
                if c and c["tokens_per_s"] is not None:
                    xs.append(n)
                    tps.append(c["tokens_per_s"])
                    ttft.append(c["ttft_p50_ms"])
            if not xs:
                continue
            label = f"{LABELS[key]}, {phase}"
            ax_tps.plot(xs, tps, style, marker="o", color=COLORS[key], label=label)
            ax_ttft.plot(xs, ttft, style, marker="o", color=COLORS[key], label=label)
    for ax in (ax_tps, ax_ttft):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(n) for n in levels])
        ax.set_xlabel("concurrent requests")
        ax.grid(True, alpha=0.3)
    ax_tps.set_ylabel("aggregate output tokens/s")
    ax_tps.set_title("Throughput")
    ax_ttft.set_ylabel("TTFT p50 (ms)")
    ax_ttft.set_yscale("log")
    ax_ttft.set_title("Time to first token (p50)")
    ax_tps.legend(fontsize=8)
    cfg = report["config"]
    fig.suptitle(
        f"{cfg['model']}, {cfg['max_tokens']} tokens/request, {cfg['threads']} threads, "
        f"{report['machine']['cpu_model']} ({report['date'][:10]})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
