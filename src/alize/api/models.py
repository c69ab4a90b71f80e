"""``GET /v1/models`` and ``GET /v1/models/{id}``: the deployments a client can call."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from alize.api.auth import InferenceDep
from alize.api.deps import ServicesDep
from alize.api.respond import json_response
from alize.deployments.manager import Deployment
from alize.gateway.auth import authorize_deployment
from alize.protocol.openai.models import ModelList, ModelObject

router = APIRouter(tags=["models"])


def _model(deployment: Deployment) -> ModelObject:
    spec = deployment.spec
    model = ModelObject(
        id=spec.name,
        created=spec.created,
        owned_by=spec.owned_by,
        cold_start=deployment.cold_starts.summary(),
    )
    if spec.card is not None:
        model.card = spec.card
    return model


@router.get("/v1/models", summary="List the deployments you can call")
async def list_models(services: ServicesDep, principal: InferenceDep) -> JSONResponse:
    """Only the deployments the caller's key may use (all of them in open mode)."""
    allowed = principal.allowed_deployments if principal is not None else None
    deployments = [d for d in services.deployments.list() if allowed is None or d.name in allowed]
    return json_response(ModelList(data=[_model(d) for d in deployments]))


@router.get("/v1/models/{model_id:path}", summary="Describe one deployment")
async def get_model(model_id: str, services: ServicesDep, principal: InferenceDep) -> JSONResponse:
    if principal is not None:
        authorize_deployment(principal, model_id)
    return json_response(_model(services.deployments.get(model_id)))
