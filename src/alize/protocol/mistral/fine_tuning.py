"""Mistral's ``POST /v1/fine_tuning/jobs`` body (``training_files`` with weights,
``hyperparameters`` at the top level, ``auto_start``); OpenAI's shares the path and is told apart
by its ``training_file`` (see ``alize.api.fine_tuning``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class MistralTrainingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_id: str = Field(max_length=64)
    weight: float = Field(1.0, gt=0, le=100)


class MistralJobCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=256)
    training_files: list[MistralTrainingFile] = Field(min_length=1, max_length=16)
    validation_files: list[str] | None = Field(None, max_length=1)
    suffix: str | None = Field(None, max_length=64)
    #: ``training_steps, learning_rate, weight_decay, warmup_fraction, epochs, seq_len`` (checked
    #: by the fine-tuning service, which names the field that is out of range)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    auto_start: bool = True
    integrations: list[dict[str, Any]] | None = None
    repositories: list[dict[str, Any]] | None = None
    job_type: str | None = Field(None, max_length=32)
