"""The hyperparameters of one LoRA fine-tuning run, whichever API shape asked for it.

OpenAI's (``n_epochs``, ``batch_size``, ``learning_rate_multiplier``) and Mistral's
(``training_steps``, ``learning_rate``, ``weight_decay``, ``warmup_fraction``, ``epochs``,
``seq_len``) requests both land here, so the trainer reads one shape. Every bound is a limit on
what a client controls: a run's cost grows with ``epochs x examples x seq_len`` and its memory
with ``micro_batch_size x seq_len``, so none of them is unbounded.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alize.catalog.cards import readable_problems
from alize.errors import InvalidRequestError

#: OpenAI's ``learning_rate_multiplier`` scales this (LoRA learning rates sit near 1e-4..5e-4)
BASE_LEARNING_RATE = 2e-4
#: the LoRA targets: every linear projection of a llama block (attention and MLP)
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Hyperparameters(BaseModel):
    """Validated settings of a run; ``model_dump()`` is what the job and its card record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_epochs: int = Field(3, ge=1, le=50, description="passes over the training examples")
    training_steps: int | None = Field(
        None, ge=1, le=100_000, description="optimizer steps; when set, it decides the run's length"
    )
    batch_size: int = Field(8, ge=1, le=256, description="sequences per optimizer step")
    micro_batch_size: int = Field(
        4, ge=1, le=64, description="sequences per forward pass (peak memory grows with it)"
    )
    learning_rate: float = Field(BASE_LEARNING_RATE, gt=0, le=1e-2)
    weight_decay: float = Field(0.0, ge=0, le=1)
    warmup_fraction: float = Field(0.05, ge=0, le=0.5, description="of the steps, linear warm-up")
    seq_len: int = Field(1024, ge=16, le=32_768, description="longest training sequence, in tokens")
    lora_rank: int = Field(8, ge=1, le=128)
    lora_alpha: int = Field(16, ge=1, le=1024)
    validation_fraction: float = Field(
        0.1, ge=0, le=0.5, description="held out for validation when no validation file is given"
    )
    checkpoint_every: int = Field(
        0, ge=0, le=100_000, description="steps between checkpoints (0 = about every 10% of the run)"
    )
    seed: int = Field(42, ge=0, le=2**31 - 1)
    export: Literal["adapter", "merged"] = Field(
        "adapter",
        description=(
            "how the result is served: a LoRA adapter on the base's llama.cpp workers, or the "
            "adapter merged into a full copy of the base (a model of its own, no adapter cost)"
        ),
    )

    @model_validator(mode="after")
    def _micro(self) -> Hyperparameters:
        if self.micro_batch_size > self.batch_size:
            # a micro-batch larger than the batch would only waste memory
            object.__setattr__(self, "micro_batch_size", self.batch_size)
        return self


def parse_hyperparameters(data: dict[str, object], *, root: str = "hyperparameters") -> Hyperparameters:
    """Validate client data into :class:`Hyperparameters`; a 400 that names the field."""
    try:
        return Hyperparameters.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        field = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        raise InvalidRequestError(
            f"Invalid {root}: {readable_problems(exc, root)}",
            param=f"{root}.{field}" if field else root,
            code="invalid_hyperparameters",
        ) from None
