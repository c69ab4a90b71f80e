"""The card of an installed pack, and how the assistant ranks chat models.

The file's header (read by the sandboxed inspector) supplies what it can prove: architecture,
context, parameters, quantization, chat template. The pack supplies what a header cannot be
trusted to say, or does not say: who trained the model, its licence, its languages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from alize.catalog.cards import GGUFFileSource, ModelCard
from alize.catalog.from_files import card_from_gguf_info
from alize.catalog.gguf import GGUFInfo
from alize.catalog.packs import Pack
from alize.catalog.packs.install import InstalledPack


def pack_card(pack: Pack, installed: InstalledPack, info: GGUFInfo) -> ModelCard:
    drafted = card_from_gguf_info(info, pack.name)
    return ModelCard.model_validate(
        {
            **drafted.model_dump(),
            "display_name": pack.display_name,
            "publisher": pack.publisher,
            "license": pack.license,
            "languages": pack.languages,
            "size_bytes": installed.size_bytes,
            "description": pack.description,
            "source": GGUFFileSource(path=str(installed.path)),
        }
    )


def chat_rank(card: Mapping[str, Any], preferences: Mapping[str, int]) -> tuple[int, float, int, str]:
    """Sort key, best first: measured quality (the mean of the card's ``quality_scores``) when a
    card has any, then the packs' stated ``chat_preference``, then everything else by id."""
    scores = card.get("quality_scores") or {}
    values = [v for v in scores.values() if isinstance(v, int | float) and math.isfinite(v)]
    model_id = str(card.get("id", ""))
    if values:
        return (0, -sum(values) / len(values), 0, model_id)
    preference = preferences.get(model_id)
    if preference is not None:
        return (1, 0.0, preference, model_id)
    return (2, 0.0, 0, model_id)
