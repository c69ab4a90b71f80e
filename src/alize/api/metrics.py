"""``GET /metrics``: the Prometheus text exposition (docs/operations.md lists every family).

Open while the platform has no keys (loopback only, like everything else then); once keys
exist it needs an admin key unless ``observability.metrics_public`` is set, since spend by
project and deployment names are the operator's business.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from alize.api.auth import authenticate
from alize.api.deps import ServicesDep
from alize.gateway.auth import require_admin
from alize.observability.workers import worker_families

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request, services: ServicesDep) -> Response:
    settings = services.settings.observability
    if not settings.metrics_public and await services.tenancy.keys_exist():
        principal = await authenticate(services, request.headers, "/metrics")
        if principal is not None:
            require_admin(principal)
    extra = await worker_families(services.deployments) if settings.engine_metrics else []
    body = services.observability.metrics.render(extra)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
