"""``GET /health`` (the process is alive) and ``GET /ready`` (the default model is loaded)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from alize.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness")
async def health() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/ready", summary="Readiness: the default deployment is loaded")
async def ready(services: ServicesDep) -> JSONResponse:
    name = services.settings.default_model
    deployments = {d.name: d for d in services.deployments.list()}
    deployment = deployments.get(name)
    if deployment is None or not deployment.loaded:
        return JSONResponse(
            {"status": "loading", "model": name}, status_code=503, headers={"Retry-After": "2"}
        )
    return JSONResponse({"status": "ready", "model": name})
