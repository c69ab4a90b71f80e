"""Engine-neutral values that flow between the gateway, deployments and engines.

These dataclasses are the contract between layers: the HTTP layer translates wire models
(``alize.protocol``) into them, engines consume and produce only them. Nothing here knows
about HTTP, JSON wire shapes or a particular engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
JSONSchema = dict[str, Any]


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for; ``arguments`` is JSON text, as on the wire."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the caller offers the model."""

    name: str
    description: str = ""
    parameters: JSONSchema = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample. ``json_schema`` asks the engine for schema-constrained decoding.

    ``max_tokens`` is the most tokens to generate; ``None`` means none was asked for. The gateway
    settles it to a number before a request reaches an engine
    (:func:`alize.gateway.calls.settle_max_tokens`); an engine given ``None`` generates until the
    model stops or its context is full."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    json_schema: JSONSchema | None = None
    #: generate ``max_tokens`` whatever the model says (llama.cpp's and vLLM's extension: for
    #: load tests that need replies of a known length)
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class FimPrompt:
    """A fill-in-the-middle prompt: the engine builds it from the model's FIM tokens."""

    prefix: str
    suffix: str


@dataclass(slots=True)
class GenerationRequest:
    """One sequence to generate: chat ``messages``, a raw ``prompt`` or a ``fim`` prompt."""

    request_id: str
    params: SamplingParams
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    fim: FimPrompt | None = None
    #: tools handed to the engine's own template (only when the engine supports them natively)
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | None = None
    #: the LoRA adapter to apply (a name in the engine's ``adapters``); None = the base model
    adapter: str | None = None


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Delta:
    """A piece of generated output. The last delta of a sequence has ``finish_reason`` and
    ``usage``; ``tokens`` counts the tokens this delta carries (for metering on cancellation)."""

    text: str = ""
    tokens: int = 0
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    #: on the first delta of a reply only: how many times the engine retried its upstream call
    #: before the reply started (the remote engine; 0 elsewhere)
    retries: int = 0


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What the gateway needs to know about a loaded model to validate and route requests."""

    context_length: int
    max_sequences: int
    supports_chat: bool = True
    supports_tools: bool = False
    supports_fim: bool = False
    supports_embeddings: bool = False
    embedding_dimensions: int | None = None
    architecture: str | None = None


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int
