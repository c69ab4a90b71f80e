"""The llama.cpp engine: a supervised worker process reached over its loopback HTTP listener.

Streaming uses one HTTP/1.1 connection per sequence: closing it (the caller closed our
iterator because its client went away) makes llama.cpp cancel that slot at the next token.
A worker that dies is restarted in the background; requests in flight get a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx

from alize.domain import Delta, Embeddings, EngineInfo, GenerationRequest
from alize.engines.base import Engine, EngineConfig, loaded
from alize.engines.http_client import EngineHttpClient, open_client
from alize.engines.llamacpp.process import WorkerHandle, WorkerProcess, worker_config
from alize.engines.llamacpp.wire import chat_body, completion_body
from alize.engines.openai_wire import ChunkDecoder
from alize.errors import (
    AlizeError,
    ContextLengthExceededError,
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    UnsupportedFeatureError,
)

log = logging.getLogger(__name__)


class LlamaCppEngine(Engine):
    def __init__(self, config: EngineConfig) -> None:
        if config.model_path is None:
            raise InvalidRequestError("a llama.cpp deployment needs a GGUF model file", param="model_path")
        self._config = config
        self._lock = asyncio.Lock()
        self._worker: WorkerProcess | None = None
        self._handle: WorkerHandle | None = None
        self._client: EngineHttpClient | None = None
        self._info: EngineInfo | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def info(self) -> EngineInfo:
        return loaded(self._info)

    @property
    def pid(self) -> int | None:
        return self._worker.pid if self._worker is not None else None

    async def start(self) -> EngineInfo:
        async with self._lock:
            if self._handle is not None and self._worker is not None and self._worker.alive:
                return self.info
            self._stopping = False
            cfg = self._config
            worker = WorkerProcess(worker_config(cfg), load_timeout_s=cfg.load_timeout_s)
            handle = await worker.start()
            self._worker, self._handle = worker, handle
            self._client = open_client(
                handle.address,
                headers={"Authorization": f"Bearer {handle.secret}"},
                timeout_s=cfg.request_timeout_s,
                connect_timeout_s=10.0,
                max_connections=cfg.parallel + 16,
                direct=True,
                spare=1,  # each stream's connection closes after it; the next count needs one
            )
            traits = handle.traits
            trained = traits.context_length or cfg.ctx_per_slot
            self._info = EngineInfo(
                context_length=min(trained, cfg.ctx_per_slot),
                max_sequences=cfg.parallel,
                supports_chat=traits.has_chat_template,
                supports_tools=traits.supports_tools,
                supports_fim=traits.supports_fim,
                architecture=traits.architecture,
            )
            self._watch = asyncio.create_task(self._watch_worker(worker))
            return self._info

    async def _watch_worker(self, worker: WorkerProcess) -> None:
        """Restart a crashed worker so the deployment recovers without an operator."""
        code = await worker.wait()
        if self._stopping or worker is not self._worker:
            return
        log.error("llama.cpp worker %s exited with code %s; restarting", worker.pid, code)
        await self._reset()
        await asyncio.sleep(self._config.restart_backoff_s)
        if not self._stopping:
            try:
                await self.start()
            except AlizeError as exc:
                log.error("restart failed: %s", exc.message)

    async def _reset(self) -> None:
        client, self._client, self._handle = self._client, None, None
        if client is not None:
            await client.aclose()
        if self._worker is not None:
            await self._worker.stop()

    async def stop(self) -> None:
        self._stopping = True
        async with self._lock:
            watch, self._watch = self._watch, None
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            await self._reset()
            self._worker = None
            self._info = None

    async def check(self) -> None:
        """The worker is running and its listener answers ``/health`` (200 once the model is
        loaded); a dead or restarting worker raises, which takes this replica out of routing."""
        client = self._client
        if client is None or self._worker is None or not self._worker.alive:
            raise EngineUnavailableError("the model worker is not running", retry_after=3)
        try:
            response = await client.send("GET", "/health", read_timeout_s=5.0)
        except httpx.TransportError as exc:
            raise await self._transport_error(exc) from None
        if response.status_code != 200:
            raise EngineUnavailableError(
                f"the model worker is not ready (HTTP {response.status_code})", retry_after=2
            )

    async def metrics_text(self) -> str | None:
        """The worker's ``/metrics`` (llama.cpp's own ``llamacpp:*`` families); ``None`` while
        it is not running, so a scrape never loads a model."""
        client = self._client
        if client is None or self._worker is None or not self._worker.alive:
            return None
        try:
            response = await client.send("GET", "/metrics", read_timeout_s=5.0)
        except httpx.TransportError:
            return None
        return response.text if response.status_code == 200 else None

    async def _ready_client(self) -> EngineHttpClient:
        if self._client is None or self._worker is None or not self._worker.alive:
            if self._stopping:
                raise EngineUnavailableError("the deployment is shutting down", retry_after=5)
            await self.start()
        assert self._client is not None
        return self._client

    # ------------------------------------------------------------------ requests

    def _prompt_for(self, request: GenerationRequest) -> str | list[int | str]:
        if request.fim is not None:
            fim = self._handle.traits.fim_token_ids if self._handle else None
            if not fim:
                raise UnsupportedFeatureError(
                    "this model has no fill-in-the-middle tokens; use a code model for FIM", param="model"
                )
            pre, suf, mid = fim
            return [pre, request.fim.prefix, suf, request.fim.suffix, mid]
        return request.prompt or ""

    def _lora_scales(self, adapter: str | None) -> list[dict[str, float]] | None:
        """Explicit scales for EVERY loaded adapter: 1 for the chosen one, 0 for the others.

        A request without a ``lora`` field runs with whatever adapter set the server was started
        with, and reuses the slot's KV cache without the check a changed adapter set triggers;
        so with adapters loaded, each request says exactly which ones apply, the base included."""
        adapters = self._config.adapters
        if not adapters:
            if adapter is not None:
                raise InvalidRequestError(f"this deployment has no adapter '{adapter}'", param="model")
            return None
        if adapter is not None and all(a.name != adapter for a in adapters):
            raise InvalidRequestError(f"this deployment has no adapter '{adapter}'", param="model")
        return [{"id": i, "scale": 1.0 if a.name == adapter else 0.0} for i, a in enumerate(adapters)]

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        lora = self._lora_scales(request.adapter)
        client = await self._ready_client()
        if request.messages:
            path, body = "/v1/chat/completions", chat_body(request)
        else:
            path, body = "/v1/completions", completion_body(request, self._prompt_for(request))
        if lora is not None:
            body["lora"] = lora
        decoder = ChunkDecoder()
        try:
            response = await client.send("POST", path, json_body=body, stream=True, close=True)
            try:
                if response.status_code != 200:
                    await response.aread()
                    raise self._error_from(response.status_code, response.content)
                # the worker's HTTP server closes a connection once a stream ends, so the
                # stream asks for that (close=True): a pooled one would be found dead by the
                # next call, which would then send again on a new connection
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        payload = line[6:]
                        if payload == "[DONE]":
                            break
                        delta = decoder.decode(json.loads(payload))
                        if delta is not None:
                            yield delta
                    elif line.startswith("error: "):
                        raise self._error_from(500, line[7:].encode())
            finally:
                await response.aclose()  # early: the worker sees the disconnect and frees the slot
        except httpx.TransportError as exc:
            raise await self._transport_error(exc) from None

    async def _transport_error(self, exc: httpx.TransportError) -> AlizeError:
        """Unavailable when the worker is gone: a lost connection is most often its death, which
        the child watcher reports a moment later, so it is given that moment to say so."""
        worker = self._worker
        if worker is not None and worker.alive:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.wait(), 0.5)
        if self._worker is None or not self._worker.alive:
            return EngineUnavailableError(
                "the model worker stopped unexpectedly; it is being restarted", retry_after=3
            )
        return EngineError(f"lost the connection to the model worker: {type(exc).__name__}")

    def _error_from(self, status: int, content: bytes) -> AlizeError:
        try:
            error: dict[str, Any] = json.loads(content).get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        message = str(error.get("message") or content[:300].decode(errors="replace"))
        if error.get("type") == "exceed_context_size_error":
            return ContextLengthExceededError(
                prompt_tokens=int(error.get("n_prompt_tokens", 0)),
                max_tokens=0,
                context_length=int(error.get("n_ctx", 0)),
            )
        if 400 <= status < 500:
            return InvalidRequestError(f"the engine rejected the request: {message}")
        if status == 503:
            return EngineUnavailableError(f"the engine is not ready: {message}", retry_after=2)
        return EngineError(f"the engine failed: {message}")

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        client = await self._ready_client()
        try:
            response = await client.send("POST", path, json_body=body)
        except httpx.TransportError as exc:
            raise await self._transport_error(exc) from None
        if response.status_code != 200:
            raise self._error_from(response.status_code, response.content)
        result: dict[str, Any] = response.json()
        return result

    async def _tokenize(self, text: str, *, add_special: bool) -> int:
        result = await self._post(
            "/tokenize", {"content": text, "add_special": add_special, "parse_special": True}
        )
        return len(result.get("tokens") or [])

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """The exact prompt size, in one round trip to the worker: a chat is templated and
        tokenised by ``/v1/chat/completions/input_tokens`` from the very body the generation will
        send (tools, ``response_format`` and ``lora`` included), where ``/apply-template`` then
        ``/tokenize`` took two; a FIM prompt's two parts are tokenised at once."""
        if request.messages:
            body = chat_body(request)
            lora = self._lora_scales(request.adapter)
            if lora is not None:
                body["lora"] = lora
            body.pop("stream", None)
            body.pop("stream_options", None)
            counted = await self._post("/v1/chat/completions/input_tokens", body)
            return int(counted["input_tokens"])
        if request.fim is not None:
            self._prompt_for(request)  # raises for models without FIM tokens
            prefix, suffix = await asyncio.gather(
                self._tokenize(request.fim.prefix, add_special=False),
                self._tokenize(request.fim.suffix, add_special=False),
            )
            return prefix + suffix + 3
        return await self._tokenize(request.prompt or "", add_special=True)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        raise UnsupportedFeatureError(
            "this deployment serves a generative model; use an embeddings model for /v1/embeddings",
            param="model",
        )
