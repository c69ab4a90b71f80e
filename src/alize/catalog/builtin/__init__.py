"""The cards of the models Alizé ships with, kept as JSON data beside this module.

The JSON holds figures read from the real files (context length, parameters, quantization,
size), so listing the catalog costs no file parsing. :func:`builtin_cards` refreshes the size
from disk when the weights are present, and with ``inspect_files=True`` re-reads parameter
counts and context lengths from the files themselves (a test does this, so the JSON cannot
silently drift from the weights).

Default prices, in EUR micro-units per million tokens (1_000_000 = 1 EUR), are deliberately
token-sized so metering and budgets have something non-zero to count, scaled with model size:

=====================  ======  =======
model                  input   output
=====================  ======  =======
smollm2-135m-instruct  10_000  20_000   (0.01 / 0.02 EUR per million tokens)
gemma3-270m            20_000  40_000   (0.02 / 0.04 EUR)
all-minilm-l6-v2        5_000       0   (0.005 EUR; embeddings produce no output tokens)
=====================  ======  =======

A deployment may override them.
"""

from __future__ import annotations

import json
from contextlib import suppress
from importlib.resources import files
from pathlib import Path

from alize.catalog.cards import ModelCard, PackagedSource
from alize.catalog.gguf import read_gguf_info
from alize.catalog.gguf_reader import GGUFFormatError
from alize.catalog.safetensors_header import SafetensorsFormatError, read_safetensors_header
from alize.catalog.sources import existing_path

#: the built-in cards, in the order the catalog lists them
BUILTIN_IDS: tuple[str, ...] = ("smollm2-135m-instruct", "gemma3-270m", "all-minilm-l6-v2")


def builtin_card(card_id: str) -> ModelCard:
    """The recorded built-in card (no file is read)."""
    return _load(card_id)


def _load(card_id: str) -> ModelCard:
    text = files(__name__).joinpath(f"{card_id}.json").read_text(encoding="utf-8")
    return ModelCard.model_validate(json.loads(text))


def _refresh(card: ModelCard, path: Path, inspect_files: bool) -> ModelCard:
    """Replace recorded figures by what the files on disk say."""
    update: dict[str, object] = {}
    if path.is_file():
        update["size_bytes"] = path.stat().st_size
        if inspect_files:
            # Packaged files come with the installation, so they are read in-process.
            info = read_gguf_info(path)
            update.update(
                parameter_count=info.parameter_count,
                quantization=info.quantization,
                kv_values_per_token=info.kv_values_per_token,
            )
            if info.context_length:
                update["context_length"] = info.context_length
    elif path.is_dir():
        shards = sorted(path.glob("*.safetensors"))
        update["size_bytes"] = sum(s.stat().st_size for s in shards)
        if inspect_files:
            update["parameter_count"] = sum(read_safetensors_header(s).parameter_count for s in shards)
    return ModelCard.model_validate({**card.model_dump(), **update})


def builtin_cards(*, cache_dir: Path | None = None, inspect_files: bool = False) -> list[ModelCard]:
    """The built-in cards; figures refreshed from the weights that are already on disk.

    Never assembles a chunked model (that waits until the model is deployed); ``cache_dir`` is
    where :mod:`alize.catalog.sources` puts assembled files."""
    cards: list[ModelCard] = []
    for card_id in BUILTIN_IDS:
        card = _load(card_id)
        path = existing_path(card.source, cache_dir=cache_dir)
        if path is not None and isinstance(card.source, PackagedSource):
            # On a read error keep the recorded figures; loading the model will report the problem.
            with suppress(OSError, GGUFFormatError, SafetensorsFormatError):
                card = _refresh(card, path, inspect_files)
        cards.append(card)
    return cards
