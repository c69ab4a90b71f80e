"""``POST /v1/completions`` (legacy text completions) and Mistral's ``POST /v1/fim/completions``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from alize.bounds import TOKENS_MAX, Seed, Tokens
from alize.protocol.openai.chat import Choices, StreamOptions, TopLogprobs
from alize.protocol.openai.common import CompletionUsage, WireModel


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str]
    suffix: str | None = None
    max_tokens: Tokens | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: Choices | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: Seed | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logprobs: TopLogprobs | None = None
    echo: bool = False
    #: llama.cpp's and vLLM's extension: generate ``max_tokens`` whatever the model says
    ignore_eos: bool = False
    user: str | None = Field(None, max_length=256)
    #: refused when not empty (a 400 says so), never silently ignored
    logit_bias: dict[str, float] | None = Field(None, max_length=300)


class FimRequest(BaseModel):
    """Mistral's fill-in-the-middle request: complete between ``prompt`` and ``suffix``."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    prompt: str
    suffix: str | None = None
    max_tokens: Tokens | None = None
    min_tokens: Annotated[int, Strict(), Field(ge=0, le=TOKENS_MAX)] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool = False
    stop: str | list[str] | None = None
    random_seed: Seed | None = None


class CompletionLogprobs(WireModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int] | None = None


class CompletionChoice(WireModel):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: CompletionLogprobs | None = None


class Completion(WireModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
