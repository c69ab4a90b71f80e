"""The catalog card of a fine-tuned model: ``ft:<base>:<suffix>:<job id>``, its base's card with
an adapter source and the facts of the run that made it (OpenAI's ``fine_tuned_model`` naming)."""

from __future__ import annotations

import re
from pathlib import Path

from alize.catalog.cards import AdapterSource, FineTuneFacts, GGUFFileSource, ModelCard

_SUFFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def check_suffix(suffix: str) -> str:
    """OpenAI allows up to 64 characters; ids must stay under the catalog's 128."""
    if not _SUFFIX_RE.match(suffix):
        raise ValueError("suffix must be 1-40 letters, digits, '-' or '_'")
    return suffix


def fine_tuned_id(base: str, suffix: str, job_id: str) -> str:
    return f"ft:{base}:{check_suffix(suffix)}:{job_id}"


def fine_tuned_card(
    base: ModelCard, *, suffix: str, weights: Path, merged: bool, facts: FineTuneFacts
) -> ModelCard:
    """The new model's card; prices are the base's until an operator changes them. ``weights`` is
    the GGUF LoRA adapter, or (``merged``) the full model with the adapter folded in."""
    data = base.model_dump(mode="json")
    if merged:
        source = GGUFFileSource(path=str(weights)).model_dump(mode="json")
        served = "a full copy of the base with the adapter merged in, on llama.cpp workers of its own"
    else:
        source = AdapterSource(base=base.id, path=str(weights)).model_dump(mode="json")
        served = f"served on {base.id}'s llama.cpp workers"
    data.update(
        id=fine_tuned_id(base.id, suffix, facts.job_id),
        display_name=f"{base.display_name} fine-tuned ({suffix})"[:200],
        tasks=[t for t in base.tasks if t in ("chat", "completion")],
        source=source,
        size_bytes=weights.stat().st_size,
        tokens_per_second=None,
        measured=None,
        quality_scores={},
        fine_tune=facts.model_dump(mode="json"),
        description=(
            f"LoRA adapter trained on this server from {base.id} by job {facts.job_id} "
            f"({facts.trained_tokens} training tokens); {served}."
        ),
    )
    return ModelCard.model_validate(data)
