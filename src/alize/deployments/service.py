"""Deployments as a service: what should be live (the database) turned into what is (the manager).

Two kinds of deployments exist side by side:

* *declared* ones come from settings (``ALIZE_DEPLOYMENTS``; by default SmolLM2 for chat and
  MiniLM for embeddings) and are recreated at every start; the admin API cannot change them;
* *stored* ones are created at run time (admin API, CLI) and kept in the ``deployments`` table,
  so they are restored at the next start.

Every deployment carries its card (what ``GET /v1/models`` shows, with the deployment's own
prices and settings merged in) and an estimate of the memory it will hold once loaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alize.catalog.cards import AdapterSource, ModelCard, RemoteSource
from alize.catalog.inspect import inspect_gguf_async
from alize.catalog.service import CatalogService
from alize.catalog.sources import resolve_path, smollm2_gguf_path
from alize.catalog.tuning import Tuning
from alize.config import Settings
from alize.deployment_config import DeploymentConfig, DeploymentSettings
from alize.deployments.benchmark import BenchmarkPlan, measure
from alize.deployments.lifecycle import estimate_memory
from alize.deployments.manager import Deployment, DeploymentManager, QueueLimits
from alize.deployments.replicas import ReplicaSet
from alize.deployments.specs import (
    LIVE_FIELDS,
    SCALING_FIELDS,
    UPDATABLE_FIELDS,
    DeploymentSpec,
    adapter_spec,
    build_spec,
    engine_config,
    engine_kind,
    parse_deployment,
)
from alize.engines.base import LoraAdapter
from alize.errors import (
    AlizeError,
    ConflictError,
    InvalidRequestError,
    UnsupportedFeatureError,
    ValidationFailedError,
)
from alize.store.database import Database
from alize.store.repositories import DeploymentRepository

log = logging.getLogger(__name__)


def tuned_variant(card: ModelCard, kind: str) -> Path | None:
    """The weight variant ``alize models tune`` chose for the card, if its file is still there
    (a variant deleted by hand falls back to the card's own file, with a warning)."""
    tuning = card.tuning
    if kind != "llamacpp" or tuning is None or tuning.variant_path is None:
        return None
    path = Path(tuning.variant_path)
    if not path.is_file():
        log.warning("the tuned variant of %s is gone (%s); using its own file", card.id, path)
        return None
    return path


async def _kv_values_per_token(card: ModelCard | None, kind: str, path: Path | None) -> int | None:
    """The KV size facts for the memory estimate: the card's, else (a card written before cards
    carried them, or a pack's) the GGUF's own metadata, read in the sandboxed inspector."""
    if card is not None and card.kv_values_per_token:
        return card.kv_values_per_token
    if kind != "llamacpp" or path is None or path.suffix.lower() != ".gguf":
        return None
    try:
        return (await inspect_gguf_async(path)).kv_values_per_token
    except AlizeError as exc:  # the load itself will report an unreadable file
        log.warning("could not read the KV facts of %s: %s", path, exc.message)
        return None


class DeploymentService:
    def __init__(
        self, db: Database, manager: DeploymentManager, catalog: CatalogService, settings: Settings
    ) -> None:
        self._db = db
        self._manager = manager
        self._catalog = catalog
        self._settings = settings
        self._configs: dict[str, DeploymentConfig] = {}
        self._benchmark_lock = asyncio.Lock()

    # ------------------------------------------------------------------ building specs

    async def _spec(
        self,
        config: DeploymentConfig,
        card: ModelCard | None,
        *,
        path: Path | None = None,
        declared: bool,
        kind: str | None = None,
    ) -> DeploymentSpec:
        """The spec (:mod:`alize.deployments.specs`), after the I/O it needs: the card's file
        resolved (a download or an assembly, in a thread) and its size read. A fine-tuned model
        gets its base's deployment as host (:func:`alize.deployments.specs.adapter_spec`)."""
        if card is not None and isinstance(card.source, AdapterSource):
            host = self.host_of(card.source.base)
            return adapter_spec(config, card, host.spec, declared=declared)
        kind = engine_kind(config, card, self._manager.registry.kinds, kind, ray=self._settings.ray)
        if card is not None and path is None and not isinstance(card.source, RemoteSource):
            path = await asyncio.to_thread(resolve_path, card.source, cache_dir=self._catalog.cache_dir)
            variant = tuned_variant(card, kind) if self._settings.engine.use_tuning else None
            if variant is not None:
                path = variant
        engine = engine_config(
            config, card, kind=kind, path=path, defaults=self._settings.engine, ray=self._settings.ray
        )
        existing = self._manager.find(config.name)
        if existing is not None:  # new settings keep the adapters the deployment hosts
            engine = dataclasses.replace(engine, adapters=existing.spec.engine.adapters)
        size = card.size_bytes if card is not None else None
        variant_used = card is not None and card.tuning is not None and card.tuning.variant_path == str(path)
        if (size is None or variant_used) and path is not None and path.is_file():
            size = path.stat().st_size
        # replicas on a Ray cluster hold their memory on its nodes, not under this server's budget
        memory = 0
        if engine.scaling is None:
            memory = estimate_memory(
                engine,
                size_bytes=size,
                parameter_count=card.parameter_count if card is not None else None,
                replicas=config.replicas,
                kv_values_per_token=await _kv_values_per_token(card, kind, path),
            )
        return build_spec(
            config,
            card,
            engine,
            memory_bytes=memory,
            declared=declared,
            quick_start_slots=self._settings.engine.quick_start_slots,
        )

    def host_of(self, base: str) -> Deployment:
        """The llama.cpp deployment of ``base`` that serves its fine-tuned models as adapters;
        400 when the base runs on Ray Serve (its replicas load no adapters), 409 when none runs."""
        on_ray = []
        for deployment in self._manager.list():
            spec = deployment.spec
            if spec.model_id != base or spec.adapter_host is not None:
                continue
            if spec.engine.kind == "llamacpp":
                return deployment
            if spec.engine.kind == "ray":
                on_ray.append(spec.name)
        if on_ray:
            raise UnsupportedFeatureError(
                f"fine-tuned models are served as LoRA adapters on local llama.cpp workers, and "
                f"'{base}' runs on the Ray cluster ({', '.join(on_ray)}); serve the base from a "
                "gateway without --ray (ALIZE_RAY__ADDRESS unset) to deploy its fine-tuned models",
                param="model",
            )
        raise ConflictError(
            f"no deployment serves the base model '{base}' on llama.cpp; deploy it first "
            "(a fine-tuned model is served as an adapter on its base's deployment)",
            param="model",
        )

    async def _add(self, spec: DeploymentSpec, card: ModelCard | None) -> Deployment:
        """Add to the manager; a fine-tuned model first has its adapter published on its host."""
        if spec.adapter_host is not None and card is not None and isinstance(card.source, AdapterSource):
            host = self._manager.get(spec.adapter_host)
            path = await asyncio.to_thread(resolve_path, card.source)
            adapters = tuple(a for a in host.spec.engine.adapters if a.name != spec.model_id)
            await self._manager.publish_adapters(host.name, (*adapters, LoraAdapter(spec.model_id, path)))
        return self._manager.add(spec)

    async def _retract(self, deployment: Deployment) -> None:
        """After removing a fine-tuned model, its host stops loading its adapter."""
        host_name = deployment.spec.adapter_host
        host = self._manager.find(host_name) if host_name is not None else None
        if host is not None:
            kept = tuple(a for a in host.spec.engine.adapters if a.name != deployment.spec.model_id)
            await self._manager.publish_adapters(host.name, kept)

    async def _checked_card(self, config: DeploymentConfig) -> ModelCard:
        card = await self._catalog.get(config.model)
        if config.ctx_per_slot is not None and config.ctx_per_slot > card.context_length:
            raise InvalidRequestError(
                f"ctx_per_slot {config.ctx_per_slot} is more than '{card.id}' supports "
                f"({card.context_length})",
                param="ctx_per_slot",
            )
        return card

    # ------------------------------------------------------------------ start-up

    async def _declared_spec(self, declared: DeploymentSettings) -> DeploymentSpec:
        model_id = declared.model or declared.name
        card = await self._catalog.find(model_id)
        shared = declared.model_dump(include=set(DeploymentConfig.model_fields))
        config = DeploymentConfig.model_validate({**shared, "model": model_id})
        self._configs[declared.name] = config
        # a non-default engine kind (e.g. a scripted test engine) is taken as declared
        kind = declared.engine if declared.engine != "llamacpp" else None
        if declared.model_path is not None:
            return await self._spec(config, card, path=declared.model_path, declared=True, kind=kind)
        if card is None or kind is not None:
            path = smollm2_gguf_path() if kind is None else None
            return await self._spec(config, card, path=path, declared=True, kind=kind)
        return await self._spec(config, card, declared=True)

    async def restore(self) -> None:
        """Create the declared deployments, then the stored ones (a broken one is logged, skipped)."""
        for declared in self._settings.deployments:
            try:
                self._manager.add(await self._declared_spec(declared))
            except AlizeError as exc:
                log.error("declared deployment %s is unavailable: %s", declared.name, exc.message)
        async with self._db.transaction() as session:
            rows = await DeploymentRepository(session).list()
        # fine-tuned models last: their hosts must exist first
        rows = sorted(rows, key=lambda r: r.model_id.startswith("ft:"))
        for row in rows:
            if self._manager.find(row.name) is not None:
                log.warning("stored deployment %s is shadowed by a declared one; skipping it", row.name)
                continue
            try:
                config = parse_deployment({**row.config, "name": row.name, "model": row.model_id})
                card = await self._catalog.get(config.model)
                spec = await self._spec(config, card, declared=False)
                await self._add(spec, card)
                self._configs[row.name] = config
            except AlizeError as exc:
                log.error("stored deployment %s cannot be restored: %s", row.name, exc.message)

    # ------------------------------------------------------------------ admin operations

    def list(self) -> list[Deployment]:
        return self._manager.list()

    def config_of(self, name: str) -> DeploymentConfig:
        self._manager.get(name)  # 404 for unknown names
        return self._configs[name]

    async def create(self, data: dict[str, Any]) -> Deployment:
        config = parse_deployment(data)
        if self._manager.find(config.name) is not None:
            raise ConflictError(f"a deployment named '{config.name}' already exists", param="name")
        card = await self._checked_card(config)
        spec = await self._spec(config, card, declared=False)
        async with self._db.transaction() as session:
            await DeploymentRepository(session).upsert(config.name, config.model, config.stored(), _now())
        deployment = await self._add(spec, card)
        self._configs[config.name] = config
        log.info("deployed %s (model %s, %d replica(s))", config.name, config.model, config.replicas)
        return deployment

    def _stored_only(self, name: str) -> Deployment:
        deployment = self._manager.get(name)
        if deployment.spec.declared:
            raise ConflictError(
                f"'{name}' is declared in the server's settings (ALIZE_DEPLOYMENTS); change it there",
                param="name",
            )
        return deployment

    async def update(self, name: str, changes: dict[str, Any]) -> Deployment:
        self._stored_only(name)
        refused = sorted(set(changes) - UPDATABLE_FIELDS)
        if refused:
            raise ValidationFailedError(
                f"these fields cannot be changed: {', '.join(refused)} "
                f"(updatable: {', '.join(sorted(UPDATABLE_FIELDS))}); undeploy and deploy again instead",
                param=refused[0],
            )
        config = parse_deployment({**self._configs[name].model_dump(), **changes})
        card = await self._checked_card(config)
        spec = await self._spec(config, card, declared=False)
        async with self._db.transaction() as session:
            await DeploymentRepository(session).upsert(config.name, config.model, config.stored(), _now())
        if set(changes) <= LIVE_FIELDS:
            deployment = self._manager.retune(spec)  # prices, description, filters: no reload
        elif set(changes) <= LIVE_FIELDS | SCALING_FIELDS and spec.engine.scaling is not None:
            deployment = await self._manager.rescale(spec)  # Ray Serve rescales while serving
        else:
            deployment = await self._manager.replace(spec)
        self._configs[name] = config
        return deployment

    async def delete(self, name: str) -> None:
        self._stored_only(name)
        async with self._db.transaction() as session:
            await DeploymentRepository(session).delete(name)
        removed = self._manager.get(name)
        await self._manager.remove(name)
        await self._retract(removed)
        self._configs.pop(name, None)
        log.info("undeployed %s", name)

    async def benchmark(self, model_id: str, plan: BenchmarkPlan) -> ModelCard:
        """Measure ``model_id`` on this machine and store the figures on its card (see
        :mod:`alize.deployments.benchmark`). One at a time: two would slow each other down."""
        if self._benchmark_lock.locked():
            raise ConflictError("a benchmark is already running; retry when it has finished")
        async with self._benchmark_lock:
            card = await self._catalog.get(model_id)
            serving = [d for d in self._manager.list() if d.spec.model_id == model_id]
            if serving:  # measure what clients get, on one slot taken through the fair queue
                deployment = min(serving, key=lambda d: (not d.loaded, d.spec.replicas, d.name))
                lease = await deployment.admit("benchmark")
                try:
                    figures = await measure(deployment, plan)
                finally:
                    lease.release()
            else:  # load it alone, one sequence, default engine settings; unload afterwards
                config = parse_deployment({"name": "benchmark", "model": model_id, "parallel": 1})
                card = await self._checked_card(config)
                spec = await self._spec(config, card, declared=False)
                engine = ReplicaSet([self._manager.registry.create(spec.engine)])
                scratch = Deployment(spec, engine, QueueLimits(0, 1.0), self._manager.before_load)
                try:
                    figures = await measure(scratch, plan)
                finally:
                    await scratch.unload()
            stored = await self._catalog.record_measurement(model_id, figures)
        measured = {
            "measured": figures.model_dump(mode="json"),
            "tokens_per_second": stored.tokens_per_second,
        }
        for deployment in serving:  # GET /v1/models shows the new figures at once
            shown = {**(deployment.spec.card or {}), **measured}
            self._manager.retune(dataclasses.replace(deployment.spec, card=shown))
        return stored

    async def record_tuning(self, model_id: str, tuning: Tuning) -> ModelCard:
        """Store a tuning on the card; idle stored deployments of the model are rebuilt with it at
        once (they load with it on their next request), the others at the next start."""
        card = await self._catalog.record_tuning(model_id, tuning)
        for deployment in [d for d in self._manager.list() if d.spec.model_id == model_id]:
            config = self._configs.get(deployment.name)
            spec = deployment.spec
            if config is None or deployment.busy or spec.declared or spec.adapter_host is not None:
                continue  # declared ones are rebuilt with it at the next start
            await self._manager.replace(await self._spec(config, card, declared=False))
        return card

    async def delete_model(self, model_id: str) -> None:
        """Remove a catalog model, refused while a deployment serves it."""
        users = sorted(d.name for d in self._manager.list() if d.spec.model_id == model_id)
        if users:
            raise ConflictError(
                f"'{model_id}' is deployed as {', '.join(users)}; undeploy it first", param="model"
            )
        await self._catalog.delete(model_id)


def _now() -> datetime:
    return datetime.now(UTC)
