"""Who is calling: FastAPI dependencies that turn request headers into a gateway ``Principal``.

Until any API key exists the platform is open (bind to loopback); once one exists, every
``/v1``, ``/models`` and ``/admin`` route requires a key (tenancy issue).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from alize.gateway.keys import Principal


async def inference_principal(request: Request) -> Principal | None:
    """The caller of an inference route, or None while the platform has no keys."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


async def admin_principal(request: Request) -> Principal | None:
    """The caller of an admin route, or None while the platform has no keys."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


InferenceDep = Annotated[Principal | None, Depends(inference_principal)]
AdminDep = Annotated[Principal | None, Depends(admin_principal)]
