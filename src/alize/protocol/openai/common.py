"""Shapes shared by several OpenAI endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticUndefined


class WireModel(BaseModel):
    """Base for response models. Dumps keep fields that were set (explicit nulls included) and
    fields with a non-null default (``object``, ``role``...), and drop optional fields left
    untouched, so replies carry exactly what clients of each API expect."""

    model_config = ConfigDict(extra="allow")

    def model_post_init(self, context: Any, /) -> None:
        for name, info in type(self).model_fields.items():
            if info.default is not None and info.default is not PydanticUndefined:
                self.model_fields_set.add(name)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_unset=True)


class PromptTokensDetails(WireModel):
    cached_tokens: int = 0


class CompletionUsage(WireModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprobEntry(WireModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class LogprobEntry(WireModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprobEntry] = []


class ChoiceLogprobs(WireModel):
    content: list[LogprobEntry] | None = None
    refusal: list[LogprobEntry] | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
