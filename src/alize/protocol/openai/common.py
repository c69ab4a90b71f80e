"""Shapes shared by several OpenAI endpoints."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class WireModel(BaseModel):
    """Base for response models: ``exclude_unset`` dumps keep explicit nulls, drop untouched extras."""

    model_config = ConfigDict(extra="allow")

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
