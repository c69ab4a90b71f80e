"""What a deployment is, as data: the JSON kept in ``deployments.config`` and sent by the admin API.

A deployment is a named endpoint (the ``model`` clients pass) over one catalog model, with its
own engine settings, replica count, idle timeout and prices. Engine settings left empty take
the server's defaults (``Settings.engine``); prices left empty take the card's. ``safety`` holds
the deployment's content filters (:mod:`alize.safety.policy`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alize.catalog.cards import MAX_PRICE, check_identifier, readable_problems
from alize.errors import ValidationFailedError
from alize.safety.policy import SafetyPolicy

#: fields PATCH may change (the name and the model are what a deployment *is*)
UPDATABLE_FIELDS = frozenset(
    {
        "replicas",
        "idle_timeout_s",
        "parallel",
        "ctx_per_slot",
        "price_input_per_million",
        "price_output_per_million",
        "description",
        "safety",
    }
)
#: of those, the fields that change no engine setting: applied without unloading the deployment
LIVE_FIELDS = frozenset({"price_input_per_million", "price_output_per_million", "description", "safety"})


class DeploymentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the `model` id clients call")
    model: str = Field(min_length=1, max_length=200, description="catalog model id")
    replicas: int = Field(1, ge=1, le=16, description="engine instances; requests go to the least busy")
    idle_timeout_s: float = Field(
        0, ge=0, le=30 * 24 * 3600, description="unload after this long without requests (0 = never)"
    )
    parallel: int | None = Field(None, ge=1, le=256, description="sequences decoded together per replica")
    ctx_per_slot: int | None = Field(None, ge=64, le=1_048_576, description="context tokens per sequence")
    price_input_per_million: int | None = Field(None, ge=0, le=MAX_PRICE)
    price_output_per_million: int | None = Field(None, ge=0, le=MAX_PRICE)
    description: str = Field("", max_length=2000)
    safety: SafetyPolicy | None = Field(None, description="input and output content filters")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_identifier(v, "deployment name")

    def stored(self) -> dict[str, Any]:
        """The JSON document for ``deployments.config`` (name and model have their own columns)."""
        return self.model_dump(mode="json", exclude={"name", "model"})


def parse_deployment(data: dict[str, Any]) -> DeploymentConfig:
    """Validate client-supplied deployment data into one readable error."""
    try:
        return DeploymentConfig.model_validate(data)
    except ValidationError as exc:
        problems = readable_problems(exc, "deployment")
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        raise ValidationFailedError(
            f"Invalid deployment: {problems}", param=str(first[0]) if first else None
        ) from None
