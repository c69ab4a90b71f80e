"""The one deployment schema: what a deployment is, as data.

:class:`DeploymentConfig` is what the admin API takes and the ``deployments`` table stores;
:class:`DeploymentSettings` is a deployment declared in settings (``ALIZE_DEPLOYMENTS``), which
may also name its engine and GGUF file. Pure data like :mod:`alize.config` (which re-exports
both as part of the settings); spec assembly from it lives in :mod:`alize.deployments.specs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alize.catalog.cards import MAX_PRICE, check_identifier
from alize.safety.policy import SafetyPolicy


class DeploymentConfig(BaseModel):
    """What a deployment is, as data: a named endpoint (the ``model`` clients pass) over one catalog
    model, with its own engine settings, replicas, idle timeout, prices and content filters.

    The admin API takes exactly these fields (and stores them in ``deployments.config``); a
    deployment declared in settings is a :class:`DeploymentSettings`, which adds two. Engine
    settings left empty take the server's defaults (``Settings.engine``), prices the card's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The `model` id clients call.")
    model: str = Field(min_length=1, max_length=200, description="The catalog model it serves.")
    replicas: int = Field(
        1,
        ge=1,
        le=16,
        description=(
            "Engine instances; each request goes to the least busy, or to the one holding its "
            "conversation's prompt in cache (docs/operations.md#routing-across-replicas)."
        ),
    )
    min_replicas: int | None = Field(
        None,
        ge=0,
        le=256,
        description="On a Ray cluster: autoscale from this many replicas (with `max_replicas`; 0 = to zero).",
    )
    max_replicas: int | None = Field(
        None,
        ge=1,
        le=256,
        description="On a Ray cluster: autoscale up to this many replicas; empty = `replicas`, fixed.",
    )
    target_ongoing_requests: float | None = Field(
        None,
        gt=0,
        le=1024,
        description="On a Ray cluster: sequences per replica the autoscaler aims at; default `parallel` / 2.",
    )
    idle_timeout_s: float = Field(
        0, ge=0, le=30 * 24 * 3600, description="Unload after this many seconds without requests (0 = never)."
    )
    parallel: int | None = Field(
        None, ge=1, le=256, description="Slots per replica; default engine.parallel."
    )
    ctx_per_slot: int | None = Field(
        None, ge=64, le=1_048_576, description="Context tokens per slot; default engine.ctx_per_slot."
    )
    price_input_per_million: int | None = Field(
        None, ge=0, le=MAX_PRICE, description="Micro-units per million prompt tokens; default the card's."
    )
    price_output_per_million: int | None = Field(
        None, ge=0, le=MAX_PRICE, description="Micro-units per million completion tokens; default the card's."
    )
    price_batch_input_per_million: int | None = Field(
        None,
        ge=0,
        le=MAX_PRICE,
        description="What a batch line pays per million prompt tokens; default half the input price.",
    )
    price_batch_output_per_million: int | None = Field(
        None,
        ge=0,
        le=MAX_PRICE,
        description="What a batch line pays per million completion tokens; default half the output price.",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        max_length=4,
        description="Deployments tried in order when this one is down, overloaded or its context "
        "is too short (see docs/operations.md); billed at this deployment's prices.",
    )
    description: str = Field("", max_length=2000, description="Shown with the deployment.")
    safety: SafetyPolicy | None = Field(
        None, description="Content filters on input and output (see docs/safety.md); empty = none."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_identifier(v, "deployment name")

    @model_validator(mode="after")
    def _scaling(self) -> DeploymentConfig:
        if self.max_replicas is None and (self.min_replicas is not None or self.target_ongoing_requests):
            raise ValueError("min_replicas and target_ongoing_requests need max_replicas")
        if self.max_replicas is not None and (self.min_replicas or 0) > self.max_replicas:
            raise ValueError("min_replicas is more than max_replicas")
        return self

    @field_validator("fallbacks")
    @classmethod
    def _fallbacks(cls, v: list[str]) -> list[str]:
        return [check_identifier(name, "fallback deployment name") for name in v]

    def stored(self) -> dict[str, Any]:
        """The JSON document for ``deployments.config`` (name and model have their own columns)."""
        return self.model_dump(mode="json", exclude={"name", "model"})


class DeploymentSettings(DeploymentConfig):
    """A deployment declared in settings (``ALIZE_DEPLOYMENTS``), recreated at every start. Beside
    what the admin API takes, it may name its engine and its GGUF file directly."""

    # unknown keys are an error, not silently dropped: a misspelt field in ALIZE_DEPLOYMENTS
    # ("paralel", a price under the wrong name) stops the server with the field's name
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(  # type: ignore[assignment]
        None, description="Catalog model id it serves; empty = the catalog model named like the deployment."
    )
    engine: str = Field("llamacpp", description="Engine kind (an `alize.engines` entry point).")
    model_path: Path | None = Field(None, description="A GGUF file; empty = the packaged SmolLM2 model.")
