"""From a deployment's configuration and its catalog card to the spec the manager runs: pure
functions, no I/O (the deployment service reads the card, resolves the file and passes them in).

The schema itself is :class:`alize.config.DeploymentConfig` (what the admin API takes and the
database stores) and its settings form :class:`alize.config.DeploymentSettings`. Here:

* :func:`parse_deployment` validates client data into one readable error;
* :func:`engine_kind` and :func:`engine_config` decide the engine and its settings (the
  deployment's, else the server's defaults; the context capped at the card's);
* :func:`build_spec` puts the card, the prices (the deployment's, else the card's) and the
  filters together into a :class:`DeploymentSpec`, with the card as ``GET /v1/models`` shows it.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from alize.catalog.cards import ModelCard, RemoteSource, readable_problems
from alize.config import EngineSettings, RaySettings
from alize.deployment_config import DeploymentConfig
from alize.engines.base import EngineConfig, ReplicaScaling
from alize.errors import InvalidRequestError, ValidationFailedError
from alize.safety.policy import SafetyPolicy

#: the fields PATCH changes without touching an engine: applied without unloading the deployment
LIVE_FIELDS = frozenset(
    {
        "price_input_per_million",
        "price_output_per_million",
        "price_batch_input_per_million",
        "price_batch_output_per_million",
        "description",
        "safety",
        "fallbacks",
    }
)
#: what a deployment whose engine places its own replicas (Ray Serve) changes while it serves
SCALING_FIELDS = frozenset({"replicas", "min_replicas", "max_replicas", "target_ongoing_requests"})
#: every field PATCH may change (the name and the model are what a deployment *is*)
UPDATABLE_FIELDS = LIVE_FIELDS | SCALING_FIELDS | {"idle_timeout_s", "parallel", "ctx_per_slot"}
#: the smallest context a slot is given, whatever the card says
MIN_CTX_PER_SLOT = 64


@dataclass(frozen=True, slots=True)
class Prices:
    """What a deployment charges: micro-units of the project's currency per million tokens
    (the card's prices unless the deployment overrides them)."""

    input_per_million: int = 0
    output_per_million: int = 0
    #: what a batch line pays; ``None``: half the interactive price (rounded up)
    batch_input_per_million: int | None = None
    batch_output_per_million: int | None = None

    def for_batch(self) -> Prices:
        """The prices a batch line is metered at (the batch lane's discount)."""
        return Prices(
            self.batch_input_per_million
            if self.batch_input_per_million is not None
            else -(-self.input_per_million // 2),
            self.batch_output_per_million
            if self.batch_output_per_million is not None
            else -(-self.output_per_million // 2),
        )


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """A deployment as the manager runs it: immutable; settings change by swapping the spec."""

    name: str
    model_id: str
    engine: EngineConfig
    owned_by: str = "alize"
    created: int = field(default_factory=lambda: int(time.time()))
    #: catalog card fields shown by ``GET /v1/models`` (JSON-ready)
    card: dict[str, Any] | None = None
    replicas: int = 1
    #: unload after this many seconds without a request; 0 = stay loaded
    idle_timeout_s: float = 0.0
    #: estimated bytes of memory the loaded deployment holds (all replicas), for the budget
    memory_bytes: int = 0
    prices: Prices = Prices()
    #: declared in settings (recreated at each start) rather than stored in the database
    declared: bool = False
    #: content filters on the deployment's input and output (None = not filtered)
    safety: SafetyPolicy | None = None
    #: for a fine-tuned model served as an adapter: the deployment whose engine hosts it
    adapter_host: str | None = None
    #: deployments tried in order when this one cannot serve (:mod:`alize.deployments.fallbacks`)
    fallbacks: tuple[str, ...] = ()

    @property
    def replica_ceiling(self) -> int:
        """The most replicas that may serve at once: what the fair queue admits for."""
        scaling = self.engine.scaling
        return scaling.most if scaling is not None else self.replicas

    #: slots of the small engine that answers a cold start while the full one loads (0 = none;
    #: llama.cpp only, see deployments/quickstart.py)
    quick_start_slots: int = 0


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


def engine_kind(
    config: DeploymentConfig,
    card: ModelCard | None,
    installed: Collection[str],
    override: str | None = None,
    *,
    ray: RaySettings | None = None,
) -> str:
    """The engine that serves the deployment: ``override`` (a declared deployment's), else the
    card's, else llama.cpp, whose replicas run on Ray Serve (``ray``) when a cluster is set;
    400 ``engine_not_installed`` when no such engine is registered."""
    kind = override or (card.engine if card is not None else "llamacpp")
    if kind == "llamacpp" and ray is not None and ray.address:
        kind = "ray"
    if kind not in installed:
        raise InvalidRequestError(
            f"'{config.model}' needs the '{kind}' engine, which is not installed "
            f"(installed: {', '.join(sorted(installed)) or 'none'})",
            param="model",
            code="engine_not_installed",
        )
    return kind


def engine_config(
    config: DeploymentConfig,
    card: ModelCard | None,
    *,
    kind: str,
    path: Path | None,
    defaults: EngineSettings,
    ray: RaySettings | None = None,
) -> EngineConfig:
    """The engine settings: the deployment's where it has them, else the server's defaults."""
    ctx = config.ctx_per_slot or defaults.ctx_per_slot
    if card is not None:
        ctx = min(ctx, card.context_length)
    options = remote_options(card) if card is not None else {}
    scaling = None
    if kind == "ray" and ray is not None:
        options = ray_options(config.name, ray)
        scaling = replica_scaling(config)
    # what `alize models tune` measured fastest here, for llama.cpp (the variant file is the
    # caller's: it resolves paths)
    tuned = card.tuning.settings if card is not None and card.tuning and defaults.use_tuning else None
    tuned = tuned if kind == "llamacpp" else None
    return EngineConfig(
        kind=kind,
        model_path=path,
        parallel=config.parallel or defaults.parallel,
        ctx_per_slot=max(MIN_CTX_PER_SLOT, ctx),
        threads=tuned.threads if tuned else defaults.threads,
        batch_size=tuned.batch_size if tuned else defaults.batch_size,
        ubatch_size=tuned.ubatch_size if tuned else None,
        kv_cache_type=tuned.kv_cache_type if tuned else "f16",
        flash_attn=tuned.flash_attn if tuned else "auto",
        cache_ram_mib=defaults.cache_ram_mib,
        kv_unified=defaults.kv_unified,
        load_timeout_s=defaults.load_timeout_s,
        request_timeout_s=defaults.request_timeout_s,
        restart_backoff_s=defaults.restart_backoff_s,
        options=options,
        scaling=scaling,
    )


def replica_scaling(config: DeploymentConfig) -> ReplicaScaling:
    """The replica count or autoscaling bounds of a deployment whose replicas Ray Serve places."""
    return ReplicaScaling(
        replicas=config.replicas,
        min_replicas=config.min_replicas,
        max_replicas=config.max_replicas,
        target_ongoing_requests=config.target_ongoing_requests,
    )


def ray_options(name: str, ray: RaySettings) -> dict[str, str]:
    """What the Ray engine needs from the server's settings: the cluster and the placement."""
    return {
        "address": ray.address or "auto",
        "namespace": ray.namespace,
        "application": name,
        "num_cpus": str(ray.num_cpus_per_replica),
        "health_check_period_s": str(ray.health_check_period_s),
    }


def build_spec(
    config: DeploymentConfig,
    card: ModelCard | None,
    engine: EngineConfig,
    *,
    memory_bytes: int,
    declared: bool,
    quick_start_slots: int = 0,
) -> DeploymentSpec:
    """The spec, with the card as clients see it (the deployment's prices and settings merged
    in; no local path or upstream URL). ``quick_start_slots`` applies to llama.cpp only."""
    price_in = config.price_input_per_million
    price_out = config.price_output_per_million
    if price_in is None:
        price_in = card.price_input_per_million if card is not None else 0
    if price_out is None:
        price_out = card.price_output_per_million if card is not None else 0
    prices = _prices(config, price_in, price_out)
    shown: dict[str, Any] = card.model_dump(mode="json") if card is not None else {"id": config.model}
    shown.pop("source", None)  # local paths and upstream URLs are the operator's business
    shown.update(
        model=config.model,
        engine=engine.kind,
        price_input_per_million=price_in,
        price_output_per_million=price_out,
        price_batch_input_per_million=prices.for_batch().input_per_million,
        price_batch_output_per_million=prices.for_batch().output_per_million,
        deployment={
            "replicas": config.replicas,
            "min_replicas": config.min_replicas,
            "max_replicas": config.max_replicas,
            "target_ongoing_requests": config.target_ongoing_requests,
            "idle_timeout_s": config.idle_timeout_s,
            "parallel": engine.parallel,
            "ctx_per_slot": engine.ctx_per_slot,
            "description": config.description,
            # callers see which filters apply to them (the policy holds no secret)
            "safety": config.safety.model_dump(mode="json") if config.safety else None,
            "fallbacks": list(config.fallbacks),
        },
    )
    return DeploymentSpec(
        name=config.name,
        model_id=config.model,
        engine=engine,
        card=shown,
        replicas=config.replicas,
        idle_timeout_s=config.idle_timeout_s,
        memory_bytes=memory_bytes,
        prices=prices,
        declared=declared,
        safety=config.safety,
        fallbacks=tuple(config.fallbacks),
        quick_start_slots=quick_start_slots if engine.kind == "llamacpp" else 0,
    )


def adapter_spec(
    config: DeploymentConfig, card: ModelCard, host: DeploymentSpec, *, declared: bool
) -> DeploymentSpec:
    """A fine-tuned model served as an adapter on ``host`` (its base's deployment): no engine
    of its own (the host's settings and slots), its own card, prices and filters (the host's
    filters unless it has its own)."""
    price_in = config.price_input_per_million
    price_out = config.price_output_per_million
    if price_in is None:
        price_in = card.price_input_per_million
    if price_out is None:
        price_out = card.price_output_per_million
    prices = _prices(config, price_in, price_out)
    shown: dict[str, Any] = card.model_dump(mode="json")
    shown.pop("source", None)
    shown.update(
        model=config.model,
        engine=host.engine.kind,
        price_input_per_million=price_in,
        price_output_per_million=price_out,
        price_batch_input_per_million=prices.for_batch().input_per_million,
        price_batch_output_per_million=prices.for_batch().output_per_million,
        base_deployment=host.name,
    )
    return DeploymentSpec(
        name=config.name,
        model_id=config.model,
        engine=host.engine,
        card=shown,
        prices=prices,
        declared=declared,
        safety=config.safety if config.safety is not None else host.safety,
        adapter_host=host.name,
    )


def _prices(config: DeploymentConfig, price_in: int, price_out: int) -> Prices:
    return Prices(
        price_in, price_out, config.price_batch_input_per_million, config.price_batch_output_per_million
    )


def remote_options(card: ModelCard) -> dict[str, str]:
    """What the remote engine needs from a remote card: where, which model, and what it can do
    (an upstream's model list says nothing about tasks, so the card is the authority)."""
    source = card.source
    if not isinstance(source, RemoteSource):
        return {}
    options = {
        "base_url": source.base_url,
        "upstream_model": source.upstream_model,
        "tasks": ",".join(card.tasks),
        "supports_tools": "true" if card.supports_tools else "false",
    }
    if source.api_key_env:
        options["api_key_env"] = source.api_key_env
    for name in ("max_retries", "timeout_s", "breaker_failures", "breaker_cooldown_s"):
        value = getattr(source, name)
        if value is not None:
            options[name] = str(value)
    if card.embedding_dimensions is not None:
        options["embedding_dimensions"] = str(card.embedding_dimensions)
    if card.architecture:
        options["architecture"] = card.architecture
    return options
