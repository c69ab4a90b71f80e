"""The systems ``bench/engine.py`` compares, each set up, driven with batches and torn down alike:
Alizé over HTTP (``alize serve``), llama-cpp-python's server (from a temporary venv in
bench/.cache, never part of Alizé's install) and xllamacpp in-process; and the fixed prompts they
are sent. Streams are counted by :class:`_common.StreamTally`, the one tally of all benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shlex
import shutil
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx

from _common import (
    CACHE_DIR,
    PACKAGED_MODEL_ID,
    ManagedServer,
    Req,
    StreamTally,
    free_port,
    log,
    package_version,
    process_cpu_seconds,
    sse_data,
)
from engine_prompts import warm_messages
from llcpp_venv import LOG_DIR, ensure_llcpp

SYSTEMS = ("alize", "worker", "xllamacpp", "llama-cpp-python")
LABELS = {
    "alize": "Alizé (HTTP, streaming)",
    "xllamacpp": "xllamacpp in-process",
    "llama-cpp-python": "llama-cpp-python server",
    "worker": "Alizé's llama.cpp worker, reached directly",
}
COLORS = {
    "alize": "tab:blue",
    "xllamacpp": "tab:green",
    "llama-cpp-python": "tab:orange",
    "worker": "tab:purple",
}
PHASES = ("cold", "warm")


# ---------------------------------------------------------------------------------------------- systems


def think_s(args: argparse.Namespace, client: int, nth: int) -> float:
    """How long client ``client`` waits before its ``nth`` request of a batch: seeded by the pair,
    so every system sees the same arrivals (``--think-ms``; 0 = lockstep)."""
    limit = float(getattr(args, "think_ms", 0.0)) / 1000
    return random.Random(f"{client}:{nth}").uniform(0, limit) if limit > 0 else 0.0


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

    def cpu_seconds(self) -> dict[str, float] | None:
        """CPU seconds (user + system) the system's own processes have used so far, by part
        (``gateway``: the server process itself; ``engine``: the processes it runs the model
        in), or ``None`` where the engine runs inside the benchmark's process with its client.
        On 2 shared cores what a token costs the machine is steadier than its latency, and it
        says which process the time goes to."""
        return None

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
                async for chunk in sse_data(resp):
                    tally.feed(chunk, time.perf_counter())
                    if tally.error:
                        break
        except (httpx.HTTPError, TimeoutError, json.JSONDecodeError) as exc:
            return tally.result(max_tokens, time.perf_counter(), f"{type(exc).__name__}: {exc}"[:300])
        return tally.result(max_tokens, time.perf_counter())

    async def run_batch(self, bodies: list[list[dict[str, Any]]]) -> tuple[float, list[Req]]:
        results: list[Req] = []

        async def client_loop(client: int, mine: list[dict[str, Any]]) -> None:
            for nth, body in enumerate(mine):
                await asyncio.sleep(think_s(self.args, client, nth))
                results.append(await self.one(body))

        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(i, b) for i, b in enumerate(bodies)))
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

    def cpu_seconds(self) -> dict[str, float] | None:
        proc = self.server.proc if self.server is not None else None
        used = None if proc is None else process_cpu_seconds(proc.pid)
        return None if used is None else {"gateway": used[0], "engine": used[1]}


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
            admin_key = None
            if self.args.policies:
                admin_key = env["ALIZE_ADMIN_KEY"] = f"bench-admin-{uuid.uuid4().hex}"
            cmd = self.command(port)
            alize_env = {k: v for k, v in env.items() if k.startswith("ALIZE_") and k != "ALIZE_ADMIN_KEY"}
            self.info.update({"command": shlex.join(cmd), "env": alize_env, "started_by_bench": True})
            self.server = ManagedServer("alize", cmd, env, LOG_DIR / "alize.log")
            log(f"alize: starting {shlex.join(cmd)}")
            self.server.start()
            waited = await asyncio.to_thread(
                self.server.wait_ready, f"{self.base_url}/ready", self.args.ready_timeout
            )
            self.info["ready_after_s"] = round(waited, 2)
            log(f"alize: ready after {waited:.1f}s")
            if admin_key is not None:
                self.api_key = await self.switch_policies_on(admin_key)
        self.info["policies"] = self.policies if self.args.policies and not self.args.alize_url else None
        self.open_client()
        await self.probe_eos_modes(["ignore_eos", "logit_bias", "none"])

    #: what a bench-started Alizé serves under with ``--policies`` (the default): an API key, rate
    #: limits on the key and its project, a monthly budget, prices, and metering (always on)
    policies: ClassVar[dict[str, Any]] = {
        "api_key": True,
        "key_limits": {"rpm": 100_000, "tpm": 1_000_000_000, "concurrency": 1_000},
        "project_limits": {"rpm": 100_000, "tpm": 1_000_000_000, "concurrency": 1_000},
        "monthly_budget_micros": 10**12,
        "prices_per_million": {"input": 100_000, "output": 200_000},
        "metering": "one usage row per request (always on)",
    }

    async def switch_policies_on(self, admin_key: str) -> str:
        """A project with a budget and limits, a key with limits, prices on the model: every
        request is then authenticated, limited, held against the budget, charged and metered."""
        p = self.policies
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=60) as admin:

            async def call(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
                r = await admin.request(method, f"/admin/api{path}", json=body)
                if r.status_code >= 300:
                    raise RuntimeError(f"{method} {path}: HTTP {r.status_code}: {r.text[:300]}")
                result: dict[str, Any] = r.json()
                return result

            project = await call(
                "POST",
                "/projects",
                {"name": "bench", "monthly_budget_micros": p["monthly_budget_micros"], **p["project_limits"]},
            )
            key = await call(
                "POST", "/keys", {"name": "bench", "project_id": project["id"], **p["key_limits"]}
            )
            prices = p["prices_per_million"]
            await call(
                "PATCH",
                f"/models/{self.model}",
                {"price_input_per_million": prices["input"], "price_output_per_million": prices["output"]},
            )
        log("alize: API key, key and project limits, budget and prices on")
        return str(key["key"])


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

        def client_loop(client: int, mine: list[dict[str, Any]]) -> None:
            for nth, body in enumerate(mine):
                time.sleep(think_s(self.args, client, nth))
                r = self.one(body)
                with lock:
                    results.append(r)

        threads = [
            threading.Thread(target=client_loop, args=(i, b), daemon=True) for i, b in enumerate(bodies)
        ]
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


class WorkerSystem(HttpSystem):
    """Alizé's own llama.cpp worker process (``alize.engines.llamacpp.worker``, the very process
    ``alize serve`` starts per deployment, started here by Alizé's own ``WorkerProcess``) reached
    over its loopback HTTP listener with its secret: the engine over HTTP in a process of its own,
    no gateway in front. Beside ``alize`` and ``xllamacpp`` it splits Alizé's TTFT over the
    in-process engine into what HTTP and a second process cost and what the gateway costs."""

    key = "worker"

    def __init__(self, args: argparse.Namespace, gguf_path: Path, eog_ids: list[int]) -> None:
        super().__init__(args, gguf_path, eog_ids)
        self.worker: Any = None

    async def setup(self) -> None:
        from alize.engines.base import EngineConfig
        from alize.engines.llamacpp.process import WorkerProcess, worker_config

        a = self.args
        # what `alize serve` sends its worker, from the same EngineConfig defaults (per-slot KV,
        # f16 cache, flash attention auto, no adapters) and the bench's sizes
        config = worker_config(
            EngineConfig(
                kind="llamacpp",
                model_path=self.gguf_path,
                parallel=a.parallel,
                ctx_per_slot=a.ctx_per_slot,
                threads=a.threads,
                batch_size=a.batch_size,
                cache_ram_mib=a.cache_ram_mib,
            )
        )
        t0 = time.perf_counter()
        self.worker = WorkerProcess(config, load_timeout_s=a.ready_timeout)
        handle = await self.worker.start()
        self.base_url = handle.address  # a URL, as the llama.cpp engine uses it
        self.api_key = handle.secret
        self.info.update(
            {
                "version": package_version("alize"),
                "params": config,
                "load_s": round(time.perf_counter() - t0, 2),
                "notes": "alize.engines.llamacpp.process.WorkerProcess, HTTP to its loopback listener",
            }
        )
        self.open_client()
        await self.probe_eos_modes(["ignore_eos"])

    def cpu_seconds(self) -> dict[str, float] | None:
        pid = self.worker.pid if self.worker is not None else None
        used = None if pid is None else process_cpu_seconds(pid)
        return None if used is None else {"engine": used[0]}

    async def teardown(self) -> None:
        await self.stop()
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None


SYSTEM_CLASSES: dict[str, type[System]] = {
    "alize": AlizeSystem,
    "xllamacpp": InprocSystem,
    "llama-cpp-python": LlcppSystem,
    "worker": WorkerSystem,
}
