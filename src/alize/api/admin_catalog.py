"""``/admin/api/models`` and ``/admin/api/deployments``: the catalog and what is deployed from it.

Reading is open to any admin key; changing the catalog or the deployments is platform-wide, so
it needs a platform admin key, and each change is written to the audit log.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from alize.api.auth import AdminDep
from alize.api.deps import Services, ServicesDep
from alize.catalog.cards import Evaluation, ModelCard
from alize.catalog.tuning import Tuning
from alize.deployment_config import DeploymentConfig
from alize.deployments.benchmark import BenchmarkPlan
from alize.deployments.lifecycle import held_bytes
from alize.deployments.manager import Deployment
from alize.errors import InvalidRequestError
from alize.gateway.auth import Principal
from alize.gateway.tenancy import audit_admin_action

router = APIRouter(prefix="/admin/api", tags=["admin: catalog"])


class AddModel(BaseModel):
    """A local GGUF file or Hugging Face folder (``path``), or a full card (a remote provider)."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, min_length=1, max_length=4096)
    id: str | None = Field(None, min_length=1, max_length=128)
    card: dict[str, Any] | None = None


async def _require_platform_admin(services: Services, principal: Principal | None) -> None:
    await services.tenancy.require_platform_admin(
        principal, "Changing the catalog or deployments requires a platform admin key."
    )


def _model_json(card: ModelCard, services: Services) -> dict[str, Any]:
    data = card.model_dump(mode="json")
    data["engine"] = card.engine
    data["deployments"] = [d.name for d in services.deployments.list() if d.spec.model_id == card.id]
    return data


# -- models ---------------------------------------------------------------------------------------


@router.get("/models", summary="List the catalog")
async def list_models(services: ServicesDep, _: AdminDep) -> JSONResponse:
    cards = await services.catalog.list()
    return JSONResponse({"object": "list", "data": [_model_json(c, services) for c in cards]})


@router.get("/models/{model_id:path}", summary="Show one catalog model")
async def get_model(model_id: str, services: ServicesDep, _: AdminDep) -> JSONResponse:
    return JSONResponse(_model_json(await services.catalog.get(model_id), services))


@router.post("/models", summary="Add a model (GGUF file, Hugging Face folder or remote card)")
async def add_model(body: AddModel, services: ServicesDep, principal: AdminDep) -> JSONResponse:
    await _require_platform_admin(services, principal)
    if (body.path is None) == (body.card is None):
        raise InvalidRequestError("give either 'path' (a local file or folder) or 'card'", param="path")
    if body.path is not None:
        card = await services.catalog.add_path(body.path, body.id)
    else:
        assert body.card is not None
        card = await services.catalog.add_card({**body.card, **({"id": body.id} if body.id else {})})
    await audit_admin_action(
        services.tenancy.audit, principal, "model.create", card.id, {"source": card.source.kind}
    )
    return JSONResponse(_model_json(card, services), status_code=201)


class Benchmark(BaseModel):
    """How much to measure; the defaults take a few seconds on a small model."""

    model_config = ConfigDict(extra="forbid")
    prompt_tokens: int = Field(256, ge=16, le=8192, description="Size of the measured prompt.")
    decode_tokens: int = Field(64, ge=8, le=1024, description="Tokens generated per decode run.")
    runs: int = Field(3, ge=1, le=10, description="Measured runs (median), after one warm-up.")


@router.post(
    "/models/{model_id:path}/benchmark",
    summary="Measure prefill and decode speed on this machine and store them on the card",
)
async def benchmark_model(
    model_id: str, services: ServicesDep, principal: AdminDep, body: Benchmark | None = None
) -> JSONResponse:
    await _require_platform_admin(services, principal)
    plan = body or Benchmark()
    card = await services.deployment_admin.benchmark(
        model_id, BenchmarkPlan(plan.prompt_tokens, plan.decode_tokens, plan.runs)
    )
    measured = card.measured.model_dump(mode="json") if card.measured else None
    await audit_admin_action(services.tenancy.audit, principal, "model.benchmark", model_id, measured)
    return JSONResponse(_model_json(card, services))


@router.post(
    "/models/{model_id:path}/evaluations",
    summary="Store a quality evaluation (alize eval) on the card; replaces the same task and metric",
)
async def record_evaluation(
    model_id: str, body: Evaluation, services: ServicesDep, principal: AdminDep
) -> JSONResponse:
    await _require_platform_admin(services, principal)
    card = await services.catalog.record_evaluation(model_id, body)
    await audit_admin_action(
        services.tenancy.audit, principal, "model.evaluate", model_id, body.model_dump(mode="json")
    )
    return JSONResponse(_model_json(card, services))


@router.post(
    "/models/{model_id:path}/tuning",
    summary="Store what `alize models tune` measured on the card; deployments use it from their next load",
)
async def record_tuning(
    model_id: str, body: Tuning, services: ServicesDep, principal: AdminDep
) -> JSONResponse:
    await _require_platform_admin(services, principal)
    card = await services.deployment_admin.record_tuning(model_id, body)
    summary = {"settings": body.settings.model_dump(mode="json"), "variant": body.variant_format}
    await audit_admin_action(services.tenancy.audit, principal, "model.tune", model_id, summary)
    return JSONResponse(_model_json(card, services))


@router.patch("/models/{model_id:path}", summary="Change a model's editable fields (prices, description...)")
async def update_model(
    model_id: str, changes: dict[str, Any], services: ServicesDep, principal: AdminDep
) -> JSONResponse:
    await _require_platform_admin(services, principal)
    card = await services.catalog.update(model_id, changes)
    await audit_admin_action(services.tenancy.audit, principal, "model.update", model_id, changes)
    return JSONResponse(_model_json(card, services))


@router.delete("/models/{model_id:path}", summary="Remove a model (refused while deployed)")
async def delete_model(model_id: str, services: ServicesDep, principal: AdminDep) -> JSONResponse:
    await _require_platform_admin(services, principal)
    await services.deployment_admin.delete_model(model_id)
    await audit_admin_action(services.tenancy.audit, principal, "model.delete", model_id)
    return JSONResponse({"id": model_id, "object": "model", "deleted": True})


# -- deployments ----------------------------------------------------------------------------------


def deployment_view(deployment: Deployment, config: DeploymentConfig) -> dict[str, Any]:
    """What the admin API shows of a deployment: its configuration and its live state."""
    spec = deployment.spec
    engine = deployment.engine
    return {
        "name": spec.name,
        "model": spec.model_id,
        "engine": spec.engine.kind,
        "replicas": spec.replicas,
        # on a Ray cluster: the autoscaling bounds (empty: a fixed `replicas`)
        "min_replicas": config.min_replicas,
        "max_replicas": config.max_replicas,
        "target_ongoing_requests": config.target_ongoing_requests,
        "idle_timeout_s": spec.idle_timeout_s,
        "parallel": spec.engine.parallel,
        "ctx_per_slot": spec.engine.ctx_per_slot,
        "price_input_per_million": spec.prices.input_per_million,
        "price_output_per_million": spec.prices.output_per_million,
        "prices_from_card": config.price_input_per_million is None
        and config.price_output_per_million is None,
        "description": config.description,
        "safety": config.safety.model_dump(mode="json") if config.safety else None,
        "fallbacks": list(spec.fallbacks),
        "declared": spec.declared,
        "created": spec.created,
        "state": {
            "loaded": deployment.loaded,
            "loads": deployment.loads,
            "cold_start": deployment.cold_starts.summary(),
            "busy_slots": deployment.queue.busy,
            "waiting": deployment.queue.waiting,
            "served_per_replica": list(engine.served),
            # false while a replica is out of routing (its engine unavailable, a check failed)
            "healthy_per_replica": engine.healthy,
            # replicas Ray Serve placed (``host:pid``): sequences each one started
            "served_per_ray_replica": engine.placed_replicas(),
            "memory_estimate_bytes": spec.memory_bytes,
            # measured from /proc for worker processes (llama.cpp); the estimate otherwise
            "memory_held_bytes": held_bytes(deployment) if deployment.loaded else 0,
            "worker_pids": engine.worker_pids() if deployment.loaded else [],
        },
    }


def _deployment_json(services: Services, name: str) -> dict[str, Any]:
    admin = services.deployment_admin
    return deployment_view(services.deployments.get(name), admin.config_of(name))


@router.get("/deployments", summary="List deployments and their state")
async def list_deployments(services: ServicesDep, _: AdminDep) -> JSONResponse:
    budget = services.memory_budget
    data = [_deployment_json(services, d.name) for d in services.deployments.list()]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "memory": {
                "budget_bytes": budget.limit_bytes,
                "estimated_in_use_bytes": budget.used_bytes(),
                "evictions": budget.evictions,
            },
        }
    )


@router.get("/deployments/{name:path}", summary="Show one deployment")
async def get_deployment(name: str, services: ServicesDep, _: AdminDep) -> JSONResponse:
    return JSONResponse(_deployment_json(services, name))


@router.post("/deployments", summary="Deploy a catalog model under a name")
async def create_deployment(body: dict[str, Any], services: ServicesDep, principal: AdminDep) -> JSONResponse:
    await _require_platform_admin(services, principal)
    deployment = await services.deployment_admin.create(body)
    view = _deployment_json(services, deployment.name)
    await audit_admin_action(services.tenancy.audit, principal, "deployment.create", deployment.name, body)
    return JSONResponse(view, status_code=201)


@router.patch("/deployments/{name:path}", summary="Change a deployment (replicas, timeouts, prices...)")
async def update_deployment(
    name: str, changes: dict[str, Any], services: ServicesDep, principal: AdminDep
) -> JSONResponse:
    await _require_platform_admin(services, principal)
    await services.deployment_admin.update(name, changes)
    await audit_admin_action(services.tenancy.audit, principal, "deployment.update", name, changes)
    return JSONResponse(_deployment_json(services, name))


@router.delete("/deployments/{name:path}", summary="Undeploy (stops its engines)")
async def delete_deployment(name: str, services: ServicesDep, principal: AdminDep) -> JSONResponse:
    await _require_platform_admin(services, principal)
    await services.deployment_admin.delete(name)
    await audit_admin_action(services.tenancy.audit, principal, "deployment.delete", name)
    return JSONResponse({"name": name, "object": "deployment", "deleted": True})
