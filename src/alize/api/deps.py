"""Services the routers reach through ``app.state`` (built in the lifespan, never globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from alize.config import Settings
from alize.deployments.manager import DeploymentManager
from alize.gateway.generation import GenerationService
from alize.store.database import Database


@dataclass
class Services:
    """Everything a request may need; one instance per app, built in the lifespan."""

    settings: Settings
    db: Database
    deployments: DeploymentManager
    generation: GenerationService


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def caller_identity(request: Request, user: str | None = None) -> str:
    """Who waits in the fair queue: the API key once keys exist, else the end user or address."""
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        return f"key:{principal}"
    if user:
        return f"user:{user}"
    return f"addr:{request.client.host if request.client else 'unknown'}"
