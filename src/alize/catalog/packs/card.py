"""The card of an installed pack, and how the assistant ranks chat models.

The file's header (read by the sandboxed inspector) supplies what it can prove: architecture,
context, parameters, quantization, chat template. The pack supplies what a header cannot be
trusted to say, or does not say: who trained the model, its licence, its languages.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
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


def _measured(card: Mapping[str, Any]) -> dict[str, float]:
    scores = card.get("quality_scores") or {}
    return {k: float(v) for k, v in scores.items() if isinstance(v, int | float) and math.isfinite(v)}


def common_tasks(cards: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The tasks every card was measured on (empty when one of them has no measurement): a mean
    over different task sets compares nothing, so quality only decides on common ground."""
    measured = [set(_measured(card)) for card in cards]
    return frozenset(set.intersection(*measured)) if measured else frozenset()


def chat_rank(
    card: Mapping[str, Any], preferences: Mapping[str, int], tasks: Collection[str] = ()
) -> tuple[int, float, int, str]:
    """Sort key, best first: the mean measured quality over ``tasks`` (the :func:`common_tasks`
    of the candidates) when there are any, then the packs' stated ``chat_preference``, then
    everything else by id. A model measured on this machine does not outrank a larger one only
    because nobody has evaluated the larger one yet."""
    model_id = str(card.get("id", ""))
    scores = _measured(card)
    values = [scores[t] for t in tasks if t in scores]
    preference = preferences.get(model_id)
    if values:  # equal means: the stated order, then the id
        return (0, -sum(values) / len(values), 1 << 30 if preference is None else preference, model_id)
    if preference is not None:
        return (1, 0.0, preference, model_id)
    return (2, 0.0, 0, model_id)
