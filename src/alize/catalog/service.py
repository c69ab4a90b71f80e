"""The catalog as a service: model cards kept in the database, so they survive restarts.

The service owns the transactions; the store only keeps each card as an opaque JSON document
(``catalog_models.card``). Adding a model never loads it: a GGUF file is inspected in the
sandboxed child process (:func:`alize.catalog.inspect.inspect_gguf_async`), a Hugging Face folder is
read through its JSON and safetensors headers, and a remote provider card is plain data.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alize.catalog.builtin import BUILTIN_IDS, builtin_cards
from alize.catalog.cards import Evaluation, MeasuredFigures, ModelCard, parse_card
from alize.catalog.from_files import card_from_gguf_info, card_from_hf_folder
from alize.catalog.inspect import inspect_gguf_async
from alize.catalog.packs.install import remove as remove_pack_files
from alize.catalog.tuning import Tuning
from alize.errors import ConflictError, InvalidRequestError, NotFoundError, ValidationFailedError
from alize.store.database import Database
from alize.store.repositories import CatalogModelRepository

log = logging.getLogger(__name__)

#: card fields an operator may change after adding a model (what the files say is not editable)
EDITABLE_FIELDS = frozenset(
    {
        "display_name",
        "publisher",
        "license",
        "languages",
        "description",
        "price_input_per_million",
        "price_output_per_million",
        "price_training_per_million",
        "currency",
        "tokens_per_second",
        "quality_scores",
        "supports_tools",
    }
)


#: card fields written by the server itself (the benchmark) and kept when built-ins are re-seeded
MEASURED_FIELDS = frozenset({"measured", "tokens_per_second", "evaluations", "tuning"})


class ModelNotInCatalogError(NotFoundError):
    default_code = "model_not_found"

    def __init__(self, model_id: str) -> None:
        super().__init__(f"The catalog has no model '{model_id}'.", param="model")


def _now() -> datetime:
    return datetime.now(UTC)


class CatalogService:
    """Create, read, update and delete model cards; one instance per app."""

    def __init__(
        self,
        db: Database,
        *,
        cache_dir: Path | None = None,
        models_dir: Path | None = None,
        inspect_timeout_s: float = 30.0,
    ) -> None:
        self._db = db
        self._cache_dir = cache_dir
        self._models_dir = models_dir
        self._inspect_timeout_s = inspect_timeout_s

    def _pulled_pack(self, data: dict[str, Any]) -> str | None:
        """The pack name when a stored card's file lives in the model store (``models pull``)."""
        source = data.get("source") or {}
        if self._models_dir is None or source.get("kind") != "gguf":
            return None
        try:
            relative = Path(source["path"]).relative_to(self._models_dir)
        except (KeyError, TypeError, ValueError):
            return None
        return relative.parts[0] if len(relative.parts) == 2 else None

    @property
    def cache_dir(self) -> Path | None:
        """Where assembled packaged models go (passed to :func:`alize.catalog.sources.resolve_path`)."""
        return self._cache_dir

    async def seed_builtins(self) -> list[ModelCard]:
        """Upsert the built-in cards, keeping an operator's edits of the editable fields."""
        cards = await asyncio.to_thread(builtin_cards, cache_dir=self._cache_dir)
        now = _now()
        async with self._db.transaction() as session:
            repo = CatalogModelRepository(session)
            for card in cards:
                stored = await repo.get(card.id)
                data = card.model_dump(mode="json")
                if stored is not None and self._pulled_pack(stored.card) is not None:
                    continue  # the weights were pulled as a pack: that card is the live one
                if stored is not None:
                    kept = EDITABLE_FIELDS | MEASURED_FIELDS
                    data.update({k: v for k, v in stored.card.items() if k in kept})
                await repo.upsert(card.id, data, now)
        return cards

    async def list(self) -> list[ModelCard]:
        async with self._db.transaction() as session:
            rows = await CatalogModelRepository(session).list()
        cards = []
        for row in rows:
            try:
                cards.append(ModelCard.model_validate(row.card))
            except ValueError as exc:  # a hand-edited row must not take the whole catalog down
                log.error("skipping unreadable catalog entry %s: %s", row.id, exc)
        order = {cid: i for i, cid in enumerate(BUILTIN_IDS)}
        return sorted(cards, key=lambda c: (order.get(c.id, len(order)), c.id))

    async def get(self, model_id: str) -> ModelCard:
        async with self._db.transaction() as session:
            row = await CatalogModelRepository(session).get(model_id)
        if row is None:
            raise ModelNotInCatalogError(model_id)
        return ModelCard.model_validate(row.card)

    async def find(self, model_id: str) -> ModelCard | None:
        try:
            return await self.get(model_id)
        except ModelNotInCatalogError:
            return None

    async def draft_from_path(self, path: str, model_id: str | None = None) -> ModelCard:
        """The card a local file or folder supports; nothing is stored."""
        p = Path(path)
        if not p.is_absolute():
            raise InvalidRequestError("give an absolute path on the server's machine", param="path")
        kind = await asyncio.to_thread(lambda: "dir" if p.is_dir() else "file" if p.exists() else None)
        if kind == "dir":
            return await asyncio.to_thread(card_from_hf_folder, p, model_id)
        if kind is None:
            raise InvalidRequestError(f"'{p}' does not exist on the server's machine", param="path")
        info = await inspect_gguf_async(p, timeout_s=self._inspect_timeout_s)
        return card_from_gguf_info(info, model_id)

    async def add_path(self, path: str, model_id: str | None = None) -> ModelCard:
        """Inspect a GGUF file (sandboxed) or read a Hugging Face folder, and store its card."""
        return await self.add(await self.draft_from_path(path, model_id))

    async def add_card(self, data: dict[str, Any]) -> ModelCard:
        """Store a card given as data (a remote provider, or a fully described local model)."""
        return await self.add(parse_card(data))

    async def add(self, card: ModelCard) -> ModelCard:
        async with self._db.transaction() as session:
            repo = CatalogModelRepository(session)
            if await repo.get(card.id) is not None:
                raise ConflictError(
                    f"the catalog already has a model '{card.id}'; pick another id or remove it first",
                    param="id",
                )
            await repo.upsert(card.id, card.model_dump(mode="json"), _now())
        log.info("catalog: added %s (%s)", card.id, card.source.kind)
        return card

    async def register_pulled(self, card: ModelCard) -> ModelCard:
        """Store the card of a pulled pack. A built-in model pulled as a pack (its package is not
        installed here) replaces the built-in card, keeping the operator's edits."""
        data = card.model_dump(mode="json")
        async with self._db.transaction() as session:
            repo = CatalogModelRepository(session)
            stored = await repo.get(card.id)
            if stored is not None and card.id not in BUILTIN_IDS:
                raise ConflictError(
                    f"the catalog already has a model '{card.id}' that did not come from this pack; "
                    "remove it first",
                    param="name",
                )
            if stored is not None:
                kept = EDITABLE_FIELDS | MEASURED_FIELDS
                data.update({k: v for k, v in stored.card.items() if k in kept and k != "description"})
            await repo.upsert(card.id, data, _now())
        log.info("catalog: registered pulled pack %s", card.id)
        return ModelCard.model_validate(data)

    async def update(self, model_id: str, changes: dict[str, Any]) -> ModelCard:
        """Change editable fields (prices, description...); others are refused by name."""
        refused = sorted(set(changes) - EDITABLE_FIELDS)
        if refused:
            raise ValidationFailedError(
                f"these fields cannot be changed: {', '.join(refused)} "
                f"(editable: {', '.join(sorted(EDITABLE_FIELDS))})",
                param=refused[0],
            )
        async with self._db.transaction() as session:
            repo = CatalogModelRepository(session)
            row = await repo.get(model_id)
            if row is None:
                raise ModelNotInCatalogError(model_id)
            card = parse_card({**row.card, **changes})
            await repo.upsert(model_id, card.model_dump(mode="json"), _now())
        return card

    async def record_measurement(self, model_id: str, figures: MeasuredFigures) -> ModelCard:
        """Store benchmark figures on the card; ``tokens_per_second`` becomes the measured decode
        speed (or the prefill speed of an embeddings model), so the two never disagree."""
        async with self._db.transaction() as session:
            repo = CatalogModelRepository(session)
            row = await repo.get(model_id)
            if row is None:
                raise ModelNotInCatalogError(model_id)
            speed = figures.decode_tokens_per_second or figures.prefill_tokens_per_second
            card = ModelCard.model_validate(
                {**row.card, "measured": figures.model_dump(mode="json"), "tokens_per_second": speed}
            )
            await repo.upsert(model_id, card.model_dump(mode="json"), _now())
        log.info("catalog: measured %s: %s", model_id, figures.model_dump(mode="json"))
        return card

    async def record_tuning(self, model_id: str, tuning: Tuning) -> ModelCard:
        """Store what ``alize models tune`` measured. A chosen variant file must be a GGUF file of
        the same model (architecture and parameter count, read by the sandboxed inspector): a
        deployment will load it in place of the card's own file."""
        current = await self.get(model_id)
        if tuning.variant_path is not None:
            info = await inspect_gguf_async(tuning.variant_path, timeout_s=self._inspect_timeout_s)
            if info.architecture != current.architecture or (
                current.parameter_count is not None and info.parameter_count != current.parameter_count
            ):
                raise InvalidRequestError(
                    f"the variant {tuning.variant_path} is not a file of '{model_id}' "
                    f"({info.architecture}, {info.parameter_count:,} parameters)",
                    param="variant_path",
                )
        async with self._db.transaction() as session:
            repo = CatalogModelRepository(session)
            row = await repo.get(model_id)
            if row is None:
                raise ModelNotInCatalogError(model_id)
            card = ModelCard.model_validate({**row.card, "tuning": tuning.model_dump(mode="json")})
            await repo.upsert(model_id, card.model_dump(mode="json"), _now())
        log.info("catalog: tuned %s: %s", model_id, tuning.settings.model_dump(mode="json"))
        return card

    async def record_evaluation(self, model_id: str, evaluation: Evaluation) -> ModelCard:
        """Store an evaluation on the card, replacing the previous one of the same task and
        metric; its score, as a fraction, also becomes ``quality_scores[task]`` (what the catalog
        sorts packs by, so every score there is on one scale)."""
        async with self._db.transaction() as session:
            repo = CatalogModelRepository(session)
            row = await repo.get(model_id)
            if row is None:
                raise ModelNotInCatalogError(model_id)
            current = ModelCard.model_validate(row.card)
            kept = [
                e for e in current.evaluations if (e.task, e.metric) != (evaluation.task, evaluation.metric)
            ]
            scores = {**current.quality_scores, evaluation.task: evaluation.fraction}
            card = current.model_copy(update={"evaluations": (*kept, evaluation), "quality_scores": scores})
            card = ModelCard.model_validate(card.model_dump(mode="json"))
            await repo.upsert(model_id, card.model_dump(mode="json"), _now())
        log.info("catalog: evaluated %s: %s", model_id, evaluation.model_dump(mode="json"))
        return card

    async def delete(self, model_id: str) -> None:
        """Remove a card; a pulled pack's files go with it (that is how its space is freed)."""
        async with self._db.transaction() as session:
            repo = CatalogModelRepository(session)
            row = await repo.get(model_id)
            if row is None or not await repo.delete(model_id):
                raise ModelNotInCatalogError(model_id)
        pack = self._pulled_pack(row.card)
        if pack is not None and self._models_dir is not None:
            await asyncio.to_thread(remove_pack_files, self._models_dir, pack)
        log.info("catalog: removed %s%s", model_id, f" and the files of pack {pack}" if pack else "")
