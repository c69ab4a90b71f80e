"""Start, watch and stop one llama.cpp worker process.

The parent keeps the child's stdin open: when the gateway dies, the worker sees EOF and exits,
so no orphan keeps a model in memory. A crashed worker (a llama.cpp assertion aborts it) is
noticed through ``wait()`` and reported to the engine, which restarts it on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from alize.catalog.gguf import ModelTraits
from alize.engines.base import EngineConfig
from alize.errors import EngineUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerHandle:
    """A running worker: where to reach it and how to authenticate."""

    address: str
    secret: str
    pid: int
    traits: ModelTraits
    #: seconds each start-up step took: ``imports_s``, ``traits_s``, ``engine_import_s`` and
    #: ``server_s`` as the worker measured them, ``total_s`` from spawning it to its ready line
    timings: dict[str, float] = field(default_factory=dict)


def worker_config(cfg: EngineConfig) -> dict[str, Any]:
    """The JSON the worker reads (``ALIZE_WORKER_CONFIG``): the engine settings it applies."""
    return {
        "model_path": str(cfg.model_path),
        "parallel": cfg.parallel,
        "ctx_per_slot": cfg.ctx_per_slot,
        "threads": cfg.threads,
        "batch_size": cfg.batch_size,
        "ubatch_size": cfg.ubatch_size,
        "cache_ram_mib": cfg.cache_ram_mib,
        "kv_unified": cfg.kv_unified,
        "kv_cache_type": cfg.kv_cache_type,
        "flash_attn": cfg.flash_attn,
        "lora_adapters": [str(a.path) for a in cfg.adapters],
    }


class WorkerProcess:
    """One child process; :meth:`start` returns once the model is loaded and listening."""

    def __init__(self, config: dict[str, Any], *, load_timeout_s: float) -> None:
        self._config = config
        self._load_timeout_s = load_timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.handle: WorkerHandle | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> WorkerHandle:
        spawned = time.perf_counter()
        secret = secrets.token_urlsafe(32)
        env = dict(os.environ)
        env["ALIZE_WORKER_CONFIG"] = json.dumps(self._config)
        env["ALIZE_WORKER_SECRET"] = secret
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "alize.engines.llamacpp.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), self._load_timeout_s)
        except TimeoutError:
            await self.stop()
            raise EngineUnavailableError(
                f"model did not load within {self._load_timeout_s:.0f} s", retry_after=5
            ) from None
        except asyncio.CancelledError:  # the load was abandoned (an unload, a cancelled upgrade)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await asyncio.shield(self.stop(grace_s=1.0))
            raise
        try:
            message = json.loads(line) if line else {"ready": False, "error": "worker exited while loading"}
        except json.JSONDecodeError:
            message = {"ready": False, "error": "worker wrote an unreadable start-up message"}
        if not message.get("ready"):
            await self.stop()
            raise EngineUnavailableError(f"model failed to load: {message.get('error')}", retry_after=5)
        reported = message.get("traits")
        try:
            if not isinstance(reported, dict):
                raise TypeError("no traits")
            traits = ModelTraits.from_json(reported)
        except (KeyError, TypeError, ValueError, IndexError):
            await self.stop()
            raise EngineUnavailableError(
                "the worker reported no usable model traits", retry_after=5
            ) from None
        reported_timings = message.get("timings")
        timings = (
            {str(k): float(v) for k, v in reported_timings.items() if isinstance(v, int | float)}
            if isinstance(reported_timings, dict)
            else {}
        )
        timings["total_s"] = round(time.perf_counter() - spawned, 4)
        self.handle = WorkerHandle(
            address=str(message["address"]), secret=secret, pid=self._proc.pid, traits=traits, timings=timings
        )
        log.info(
            "worker %d listening for %s after %.2f s (%s)",
            self._proc.pid,
            self._config.get("model_path"),
            timings["total_s"],
            ", ".join(f"{k} {v:.3f}" for k, v in timings.items() if k != "total_s"),
        )
        return self.handle

    async def _drain_stderr(self) -> None:
        """Keep llama.cpp's log from filling the pipe; forward it at debug level."""
        proc = self._proc
        if proc is None or proc.stderr is None:
            return
        while line := await proc.stderr.readline():
            log.debug("worker %d: %s", proc.pid, line.decode(errors="replace").rstrip())

    async def wait(self) -> int:
        """Returns the exit code once the worker has exited."""
        if self._proc is None:
            return 0
        return await self._proc.wait()

    async def stop(self, grace_s: float = 5.0) -> None:
        proc, self._proc, self.handle = self._proc, None, None
        if proc is None:
            return
        if proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
            self._stderr_task = None
