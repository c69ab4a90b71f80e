"""A scriptable engine for gateway and HTTP-layer unit tests (never used by e2e tests).

The deployment's ``model_path`` name picks the scenario, so one app can serve several:
``echo`` repeats the last user message word by word, ``slow`` sleeps between tokens,
``error-mid-stream`` fails after two tokens, ``error-first`` before the first, ``tool-json``
answers with a JSON tool call, ``zero-usage`` reports no tokens, ``embed`` is an embeddings
model (bag-of-words vectors over :data:`EMBED_VOCAB`, one prompt token per word), ``embed-down``
one whose engine fails every call, ``embed-slow`` one that takes 0.3 s per call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence

from alize.domain import Delta, Embeddings, EngineInfo, FinishReason, GenerationRequest, Usage
from alize.engines.base import Engine, EngineConfig
from alize.errors import EngineError, UnsupportedFeatureError

#: the dimensions of the ``embed`` scenario's vectors: how often each word occurs
EMBED_VOCAB = ("lighthouse", "built", "bread", "bakery", "green", "island")


class ScriptedEngine(Engine):
    def __init__(self, config: EngineConfig) -> None:
        self.scenario = config.options.get("scenario") or (
            config.model_path.name if config.model_path else "echo"
        )
        self.config = config
        self.started = 0
        self.cancelled = 0
        self._info: EngineInfo | None = None

    async def start(self) -> EngineInfo:
        self.started += 1
        embeds = self.scenario.startswith("embed")
        self._info = EngineInfo(
            context_length=self.config.ctx_per_slot,
            max_sequences=self.config.parallel,
            supports_chat=not embeds,
            supports_embeddings=embeds,
            embedding_dimensions=len(EMBED_VOCAB) if embeds else None,
        )
        return self._info

    async def stop(self) -> None:
        self._info = None

    @property
    def info(self) -> EngineInfo:
        assert self._info is not None
        return self._info

    def _words(self, request: GenerationRequest) -> list[str]:
        if self.scenario == "tool-json":
            return ['{"name": "get_weather", ', '"arguments": {"city": "Lyon"}}']
        text = request.prompt or next(
            (m.content or "" for m in reversed(request.messages) if m.role == "user"), ""
        )
        return [w + " " for w in text.split()][: request.params.max_tokens]

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        words = self._words(request)
        if self.scenario == "error-first":
            raise EngineError("scripted failure before the first token")
        try:
            for i, word in enumerate(words):
                if self.scenario == "slow":
                    await asyncio.sleep(0.05)
                if self.scenario == "error-mid-stream" and i == 2:
                    raise EngineError("scripted failure")
                yield Delta(text=word, tokens=1)
        except GeneratorExit:
            self.cancelled += 1
            raise
        n = 0 if self.scenario == "zero-usage" else len(words)
        prompt = await self.count_prompt_tokens(request)
        finish = FinishReason.LENGTH if len(words) >= request.params.max_tokens else FinishReason.STOP
        yield Delta(finish_reason=finish, usage=Usage(prompt_tokens=prompt, completion_tokens=n))

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        text = request.prompt or json.dumps([m.content for m in request.messages])
        return len(text.split())

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        if not self.scenario.startswith("embed"):
            raise UnsupportedFeatureError("only the 'embed' scenarios embed")
        if self.scenario == "embed-down":
            raise EngineError("scripted embeddings failure")
        if self.scenario == "embed-slow":
            await asyncio.sleep(0.3)
        vectors = tuple(tuple(float(t.lower().count(w)) for w in EMBED_VOCAB) for t in texts)
        return Embeddings(vectors=vectors, prompt_tokens=sum(len(t.split()) for t in texts))
