"""OpenAI's ``POST /v1/fine_tuning/jobs`` body: one ``training_file``, hyperparameters under
``method.supervised`` (or, deprecated, at the top level), values a number or ``"auto"``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hyperparameters: dict[str, Any] = Field(default_factory=dict)


class FineTuneMethod(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    supervised: SupervisedMethod | None = None


class OpenAIJobCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=256)
    training_file: str = Field(max_length=64)
    validation_file: str | None = Field(None, max_length=64)
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    hyperparameters: dict[str, Any] | None = None
    method: FineTuneMethod | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    integrations: list[dict[str, Any]] | None = None
