"""The remote engine: a catalog card served by an OpenAI-compatible upstream (vLLM, llama.cpp's
server, another Alizé, a cloud API), so it is called, limited, billed and metered like a local one.

The card's ``RemoteSource`` gives ``base_url``, ``upstream_model`` and the *name* of the
environment variable holding the API key (``api_key_env``); the key is read from the server's
environment when the deployment loads and is never logged, stored or echoed in an error.

* ``start`` checks the upstream is reachable and serves the model (``GET {base_url}/models``;
  an upstream without that route is accepted) and takes the context length it reports
  (vLLM's ``max_model_len``, an Alizé card's slot size) when that is smaller than the card's.
* ``generate`` always streams from the upstream (``stream_options.include_usage``, so the
  final usage is the upstream's own count); the gateway assembles non-streamed replies.
  Closing the iterator closes the upstream response, which cancels the upstream generation.
* Retries are bounded (``max_retries``, exponential backoff) and happen only before the first
  byte of the reply (:mod:`alize.engines.remote_http`: the call policy and the error mapping).
  How many retries a reply took travels on its first delta (``Delta.retries``), and on a final
  error in its ``x-alize-retries`` header. The reply's event stream is read by
  :mod:`alize.engines.remote_stream`, which turns every way it can break into a 502.
* A circuit breaker per engine instance (:mod:`alize.engines.breaker`; each replica of a remote
  deployment has its own) opens after ``breaker_failures`` consecutive failed attempts
  (unreachable, timed out, 5xx, a malformed stream) and refuses at once with 503
  ``circuit_open`` for ``breaker_cooldown_s``, then lets one trial through.
* ``count_prompt_tokens`` asks the upstream's ``POST /tokenize`` (vLLM's shape, which returns
  ``count``) and falls back, once and for all, to the byte-length estimate of
  :func:`alize.engines.remote_wire.estimate_prompt_tokens` (which errs high).

Upstream errors become Alizé's typed errors, naming the upstream by host only
(:mod:`alize.engines.remote_http`).

Engine options (strings, set by the deployment service from the card): ``base_url``,
``upstream_model``, ``api_key_env``, ``tasks`` (comma-separated), ``supports_tools``,
``embedding_dimensions``, and the tunables ``max_retries`` (2), ``retry_backoff_s`` (0.5),
``connect_timeout_s`` (10), ``timeout_s`` (the longest wait for the upstream's next byte; default
the server's ``engine.request_timeout_s``), ``breaker_failures`` (5), ``breaker_cooldown_s`` (30),
``tokenize`` (``auto`` or ``off``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from alize.domain import Delta, Embeddings, EngineInfo, GenerationRequest
from alize.engines.base import Engine, EngineConfig, loaded, refuse_adapter
from alize.engines.breaker import CircuitBreaker
from alize.engines.http_client import EngineHttpClient, open_client
from alize.engines.openai_wire import message_json
from alize.engines.remote_http import Upstream
from alize.engines.remote_stream import stream_deltas
from alize.engines.remote_wire import (
    chat_body,
    completion_body,
    context_of,
    estimate_prompt_tokens,
    estimate_text_tokens,
)
from alize.errors import (
    AlizeError,
    EngineUnavailableError,
    InvalidRequestError,
    UnsupportedFeatureError,
    UpstreamError,
)

log = logging.getLogger(__name__)


class RemoteEngine(Engine):
    def __init__(self, config: EngineConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        opts = config.options
        base_url, model = opts.get("base_url"), opts.get("upstream_model")
        if not base_url or not model:
            raise InvalidRequestError(
                "a remote deployment needs the card's base_url and upstream_model", param="model"
            )
        self._config = config
        self._model = model
        url = urlsplit(base_url.rstrip("/"))
        self._host = url.netloc
        #: the client is opened on the origin; every path is the whole path on it
        self._origin, self._prefix = f"{url.scheme}://{url.netloc}", url.path
        self._key_env = opts.get("api_key_env") or None
        self._tasks = {t for t in opts.get("tasks", "chat,completion").split(",") if t}
        self._connect_timeout_s = float(opts.get("connect_timeout_s", "10"))
        self._timeout_s = float(opts.get("timeout_s") or config.request_timeout_s)
        #: this replica's circuit breaker (public: routing may skip a replica whose circuit is open)
        self.breaker = CircuitBreaker(
            failures=max(1, int(opts.get("breaker_failures", "5"))),
            cooldown_s=float(opts.get("breaker_cooldown_s", "30")),
            name=f"upstream {self._host}",
        )
        self._upstream = Upstream(
            host=self._host,
            model=model,
            key_env=self._key_env,
            max_retries=max(0, int(opts.get("max_retries", "2"))),
            backoff_s=max(0.0, float(opts.get("retry_backoff_s", "0.5"))),
            timeout_s=self._timeout_s,
            breaker=self.breaker,
        )
        self._tokenize: bool | None = None if opts.get("tokenize", "auto") == "auto" else False
        self._transport = transport
        self._client: EngineHttpClient | None = None
        self._info: EngineInfo | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def info(self) -> EngineInfo:
        return loaded(self._info)

    def _read_key(self) -> str | None:
        if self._key_env is None:
            return None
        key = os.environ.get(self._key_env)
        if not key:
            raise EngineUnavailableError(
                f"the upstream API key is read from the environment variable {self._key_env}, "
                "which is not set on the server",
                retry_after=60,
            )
        return key

    async def start(self) -> EngineInfo:
        async with self._lock:
            if self._info is not None:
                return self._info
            key = self._upstream.key = self._read_key()
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            cfg = self._config
            try:
                client = open_client(
                    self._origin,
                    headers=headers,
                    timeout_s=self._timeout_s,
                    connect_timeout_s=self._connect_timeout_s,
                    max_connections=cfg.parallel + 8,
                    transport=self._transport,
                )
            except ValueError as exc:  # names the header, never its value (the key)
                raise EngineUnavailableError(
                    f"cannot call the upstream {self._host}: {exc}; check the card's base_url and "
                    f"the key in {self._key_env}",
                    retry_after=60,
                ) from None
            try:
                context = await self._probe(client)
            except BaseException:
                await client.aclose()
                raise
            self._client = client
            opts = cfg.options
            dims = opts.get("embedding_dimensions")
            self._info = EngineInfo(
                context_length=min(context or cfg.ctx_per_slot, cfg.ctx_per_slot),
                max_sequences=cfg.parallel,
                supports_chat="chat" in self._tasks,
                supports_tools=opts.get("supports_tools") == "true",
                supports_fim="fim" in self._tasks,
                supports_embeddings="embeddings" in self._tasks,
                embedding_dimensions=int(dims) if dims else None,
                architecture=opts.get("architecture") or "remote",
            )
            log.info("remote engine: %s serves %s", self._host, self._model)
            return self._info

    async def _probe(self, client: EngineHttpClient) -> int | None:
        """Reachable, credentials accepted, model served; returns the upstream's context length."""
        try:
            response, _ = await self._upstream.send(client, "GET", f"{self._prefix}/models", read_body=True)
        except EngineUnavailableError:
            raise
        except AlizeError as exc:
            if exc.extra.get("upstream_status") in (404, 405):
                return None  # an upstream without a model list: requests will tell
            raise EngineUnavailableError(exc.message, retry_after=10) from None
        try:
            listed = response.json().get("data") or []
        except (ValueError, AttributeError):
            return None
        entries = {str(e.get("id")): e for e in listed if isinstance(e, dict)}
        if entries and self._model not in entries:
            served = ", ".join(sorted(entries)[:10])
            raise EngineUnavailableError(
                f"the upstream {self._host} does not serve '{self._model}' (it serves: {served})",
                retry_after=60,
            )
        return context_of(entries.get(self._model, {}))

    async def stop(self) -> None:
        async with self._lock:
            client, self._client, self._info, self._upstream.key = self._client, None, None, None
            if client is not None:
                await client.aclose()

    async def _ready(self) -> EngineHttpClient:
        if self._client is None:
            await self.start()
        assert self._client is not None
        return self._client

    # ------------------------------------------------------------------ requests

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        refuse_adapter(request, "remote")
        client = await self._ready()
        if request.messages:
            path, body = f"{self._prefix}/chat/completions", chat_body(request, self._model)
        else:
            path, body = f"{self._prefix}/completions", completion_body(request, self._model)
        response, retries = await self._upstream.send(client, "POST", path, body, read_body=False)
        async for delta in stream_deltas(response, self._upstream, request, retries):
            yield delta

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """The upstream's own count when it has vLLM's ``/tokenize``, else an estimate that errs high."""
        if self._tokenize is not False and request.fim is None:
            counted = await self._upstream_count(request)
            if counted is not None:
                return counted
        return estimate_prompt_tokens(request)

    async def _upstream_count(self, request: GenerationRequest) -> int | None:
        client = await self._ready()
        body: dict[str, Any] = {"model": self._model}
        if request.messages:
            body["messages"] = [message_json(m) for m in request.messages]
        else:
            body["prompt"] = request.prompt or ""
        root = self._prefix.removesuffix("/v1")
        try:
            response = await client.send("POST", f"{root}/tokenize", json_body=body, read_timeout_s=10.0)
            count = response.json().get("count") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            count = None
        if isinstance(count, int) and count >= 0:
            self._tokenize = True
            return count
        if self._tokenize is None:
            log.info("remote engine: %s has no /tokenize; prompt tokens are estimated", self._host)
            self._tokenize = False
        return None

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        client = await self._ready()
        if not self.info.supports_embeddings:
            raise UnsupportedFeatureError(
                "this deployment serves a generative model; use an embeddings model for /v1/embeddings",
                param="model",
            )
        body = {"model": self._model, "input": list(texts), "encoding_format": "float"}
        response, _ = await self._upstream.send(
            client, "POST", f"{self._prefix}/embeddings", body, read_body=True
        )
        try:
            data = response.json()
            rows = sorted(data["data"], key=lambda r: int(r.get("index", 0)))
            vectors = tuple(tuple(float(x) for x in row["embedding"]) for row in rows)
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"the upstream {self._host} sent malformed embeddings ({exc})") from None
        if len(vectors) != len(texts):
            raise UpstreamError(
                f"the upstream {self._host} sent {len(vectors)} vectors for {len(texts)} inputs"
            )
        usage = data.get("usage") or {}
        tokens = usage.get("prompt_tokens")
        if not isinstance(tokens, int):
            tokens = sum(estimate_text_tokens(t) for t in texts)
        return Embeddings(vectors=vectors, prompt_tokens=tokens)
