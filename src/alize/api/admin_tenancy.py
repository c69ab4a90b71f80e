"""Tenancy administration over HTTP: projects, budgets and limits, API keys, usage, audit log.

``/admin/api/...`` needs an admin key once keys exist (the auth gate checks it). A *platform*
admin (an admin key of the ``default`` project) sees and manages every project; any other admin
key manages only its own project's keys and usage, and anything of another project answers 404,
exactly as if it did not exist. Every change is appended to the audit log.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from alize.api.auth import AdminDep
from alize.api.deps import Services, ServicesDep
from alize.bounds import INT64_MAX, Limit, Micros
from alize.errors import NotFoundError
from alize.gateway.auth import Principal
from alize.gateway.keys import KeyInfo
from alize.gateway.limits import LimitSpec
from alize.gateway.metering import UsageRecord, to_csv
from alize.gateway.projects import ProjectInfo
from alize.gateway.tenancy import audit_admin_action

router = APIRouter(prefix="/admin/api", tags=["admin: tenancy"])
GroupByParam = Literal["day", "deployment", "model", "key", "project"]
Scope = Literal["inference", "admin"]


def _inference_only() -> list[Scope]:
    return ["inference"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    monthly_budget_micros: Micros | None = Field(None, description="Monthly budget; null = none.")
    currency: str = Field("USD", min_length=3, max_length=3)
    rpm: Limit | None = None
    tpm: Limit | None = None
    concurrency: Limit | None = None


class ProjectUpdate(_Body):
    """Fields left out keep their value; ``null`` means unlimited / no budget."""

    monthly_budget_micros: Micros | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    concurrency: Limit | None = None


class KeyCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    project_id: str | None = Field(None, description="Default: the caller's project.")
    scopes: list[Scope] = Field(default_factory=_inference_only)
    allowed_deployments: list[str] | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    concurrency: Limit | None = None
    expires_at: datetime | None = None


def project_json(p: ProjectInfo) -> dict[str, Any]:
    return {
        "id": p.id,
        "object": "project",
        "name": p.name,
        "monthly_budget_micros": p.monthly_budget_micros,
        "currency": p.currency,
        "limits": {"rpm": p.limits.rpm, "tpm": p.limits.tpm, "concurrency": p.limits.concurrency},
        "created_at": p.created_at.isoformat(),
    }


def key_json(k: KeyInfo) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment is not None else None

    return {
        "id": k.id,
        "object": "api_key",
        "project_id": k.project_id,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": sorted(k.scopes),
        "allowed_deployments": list(k.allowed_deployments) if k.allowed_deployments is not None else None,
        "limits": {"rpm": k.limits.rpm, "tpm": k.limits.tpm, "concurrency": k.limits.concurrency},
        "expires_at": iso(k.expires_at),
        "revoked_at": iso(k.revoked_at),
        "created_at": iso(k.created_at),
        "last_used_at": iso(k.last_used_at),
    }


def usage_json(r: UsageRecord) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "project_id": r.project_id,
        "key_id": r.key_id,
        "deployment": r.deployment,
        "model": r.model,
        "status": r.status,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "cached_tokens": r.cached_tokens,
        "cost_micros": r.cost_micros,
        "error_code": r.error_code,
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "created_at": r.created_at.isoformat() if r.created_at is not None else None,
        "served_by": r.served_by,
        "fallback": r.fallback,
        "retries": r.retries,
    }


async def _visible_project(services: Services, principal: Principal | None, project_id: str) -> ProjectInfo:
    """The project, when the caller may see it; 404 as if it did not exist otherwise."""
    visible = await services.tenancy.visible_project_id(principal, project_id)
    assert visible is not None
    return await services.tenancy.projects.get(visible)


# -- projects -----------------------------------------------------------------------------------


@router.get("/projects", summary="List projects (a project admin sees only its own)")
async def list_projects(services: ServicesDep, principal: AdminDep) -> JSONResponse:
    scope = await services.tenancy.project_scope(principal)
    projects = await services.tenancy.projects.list()
    data = [project_json(p) for p in projects if scope is None or p.id == scope]
    return JSONResponse({"object": "list", "data": data})


@router.post("/projects", status_code=201, summary="Create a project (platform admin)")
async def create_project(body: ProjectCreate, services: ServicesDep, principal: AdminDep) -> JSONResponse:
    await services.tenancy.require_platform_admin(principal)
    project = await services.tenancy.projects.create(
        body.name,
        monthly_budget_micros=body.monthly_budget_micros,
        currency=body.currency.upper(),
        limits=LimitSpec(body.rpm, body.tpm, body.concurrency),
    )
    await audit_admin_action(
        services.tenancy.audit, principal, "project.create", project.id, project_json(project)
    )
    return JSONResponse(project_json(project), status_code=201)


@router.get("/projects/{project_id}", summary="One project, with this month's budget status")
async def get_project(project_id: str, services: ServicesDep, principal: AdminDep) -> JSONResponse:
    project = await _visible_project(services, principal, project_id)
    status = await services.tenancy.budget.status(project_id)
    body = project_json(project)
    body["budget"] = {
        "period": status.period,
        "budget_micros": status.budget_micros,
        "spent_micros": status.spent_micros,
        "reserved_micros": status.reserved_micros,
        "remaining_micros": status.remaining_micros,
    }
    return JSONResponse(body)


@router.patch("/projects/{project_id}", summary="Change a project's budget and limits (platform admin)")
async def update_project(
    project_id: str, body: ProjectUpdate, services: ServicesDep, principal: AdminDep
) -> JSONResponse:
    current = await _visible_project(services, principal, project_id)
    await services.tenancy.require_platform_admin(principal)
    given = body.model_fields_set
    old = current.limits
    limits = LimitSpec(
        body.rpm if "rpm" in given else old.rpm,
        body.tpm if "tpm" in given else old.tpm,
        body.concurrency if "concurrency" in given else old.concurrency,
    )
    budget = body.monthly_budget_micros if "monthly_budget_micros" in given else current.monthly_budget_micros
    project = await services.tenancy.projects.update(project_id, monthly_budget_micros=budget, limits=limits)
    await audit_admin_action(
        services.tenancy.audit,
        principal,
        "project.update",
        project_id,
        {"before": project_json(current), "after": project_json(project)},
    )
    return JSONResponse(project_json(project))


# -- keys ---------------------------------------------------------------------------------------


@router.get("/keys", summary="List API keys (never their secrets)")
async def list_keys(
    services: ServicesDep, principal: AdminDep, project_id: ProjectQuery = None
) -> JSONResponse:
    keys = await services.tenancy.keys.list(await services.tenancy.visible_project_id(principal, project_id))
    return JSONResponse({"object": "list", "data": [key_json(k) for k in keys]})


@router.post("/keys", status_code=201, summary="Issue an API key; its secret is shown only in this reply")
async def create_key(body: KeyCreate, services: ServicesDep, principal: AdminDep) -> JSONResponse:
    default_project = (
        principal.project_id if principal is not None else await services.tenancy.default_project_id()
    )
    project_id = body.project_id or default_project
    await _visible_project(services, principal, project_id)
    created = await services.tenancy.keys.create(
        project_id,
        body.name,
        scopes=body.scopes,
        allowed_deployments=body.allowed_deployments,
        limits=LimitSpec(body.rpm, body.tpm, body.concurrency),
        expires_at=body.expires_at,
    )
    await audit_admin_action(
        services.tenancy.audit, principal, "key.create", created.info.id, key_json(created.info)
    )
    return JSONResponse({**key_json(created.info), "key": created.plaintext}, status_code=201)


@router.post("/keys/{key_id}/revoke", summary="Revoke an API key")
async def revoke_key(key_id: str, services: ServicesDep, principal: AdminDep) -> JSONResponse:
    scope = await services.tenancy.project_scope(principal)
    info = await services.tenancy.keys.revoke(key_id, project_id=scope)
    await audit_admin_action(
        services.tenancy.audit, principal, "key.revoke", key_id, {"project_id": info.project_id}
    )
    return JSONResponse(key_json(info))


@router.delete("/keys/{key_id}", summary="Revoke an API key (same as POST .../revoke)")
async def delete_key(key_id: str, services: ServicesDep, principal: AdminDep) -> JSONResponse:
    return await revoke_key(key_id, services, principal)


@router.post("/keys/{key_id}/rotate", summary="Replace a key by a new secret; the old one stops working")
async def rotate_key(key_id: str, services: ServicesDep, principal: AdminDep) -> JSONResponse:
    scope = await services.tenancy.project_scope(principal)
    created = await services.tenancy.keys.rotate(key_id, project_id=scope)
    await audit_admin_action(
        services.tenancy.audit,
        principal,
        "key.rotate",
        key_id,
        {"project_id": created.info.project_id, "new_key_id": created.info.id},
    )
    return JSONResponse({**key_json(created.info), "key": created.plaintext}, status_code=201)


# -- usage --------------------------------------------------------------------------------------


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """Default: the last 30 days up to now; naive datetimes are UTC."""
    end = end or datetime.now(UTC) + timedelta(seconds=1)
    start = start or end - timedelta(days=30)
    fix = [m if m.tzinfo is not None else m.replace(tzinfo=UTC) for m in (start, end)]
    return fix[0], fix[1]


async def _report(
    services: Services,
    principal: Principal | None,
    project_id: str | None,
    start: datetime | None,
    end: datetime | None,
    group_by: GroupByParam,
) -> list[Any]:
    chosen = await services.tenancy.visible_project_id(principal, project_id)
    begin, finish = _range(start, end)
    metering = services.tenancy.metering
    if chosen is None:
        return await metering.report_all_projects(begin, finish, group_by)
    return await metering.report(chosen, begin, finish, group_by)


UsageQuery = Annotated[GroupByParam, Query(description="day, deployment, model, key or project")]
ProjectQuery = Annotated[str | None, Query(description="One project (platform admins; default all).")]
StartQuery = Annotated[datetime | None, Query(description="Inclusive; default 30 days before `end`.")]
EndQuery = Annotated[datetime | None, Query(description="Exclusive; default now.")]


@router.get("/usage", summary="Usage totals grouped by day, deployment, model, key or project")
async def usage(
    services: ServicesDep,
    principal: AdminDep,
    group_by: UsageQuery = "day",
    project_id: ProjectQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
    format: Literal["json", "csv"] = "json",
) -> Response:
    rows = await _report(services, principal, project_id, start, end, group_by)
    if format == "csv":
        return _csv(rows, group_by)
    data = [{"group": r.group, **{k: getattr(r, k) for k in _TOTALS}} for r in rows]
    return JSONResponse({"object": "list", "group_by": group_by, "data": data})


_TOTALS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_micros")


def _csv(rows: list[Any], group_by: str) -> Response:
    return Response(
        to_csv(rows),
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="usage-by-{group_by}.csv"'},
    )


@router.get("/usage.csv", summary="Usage totals as CSV")
async def usage_csv(
    services: ServicesDep,
    principal: AdminDep,
    group_by: UsageQuery = "day",
    project_id: ProjectQuery = None,
    start: StartQuery = None,
    end: EndQuery = None,
) -> Response:
    return _csv(await _report(services, principal, project_id, start, end, group_by), group_by)


@router.get("/usage/requests/{request_id}", summary="The ledger row of one request")
async def usage_request(request_id: str, services: ServicesDep, principal: AdminDep) -> JSONResponse:
    row = await services.tenancy.usage_row(request_id, await services.tenancy.project_scope(principal))
    if row is None:
        raise NotFoundError(f"No usage recorded for request '{request_id}'.")
    return JSONResponse(usage_json(row))


# -- audit --------------------------------------------------------------------------------------


@router.get("/audit", summary="Audit log, newest first (platform admin)")
async def audit_log(
    services: ServicesDep,
    principal: AdminDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_seq: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
) -> JSONResponse:
    await services.tenancy.require_platform_admin(principal)
    entries = await services.tenancy.audit.list(limit=limit, before_seq=before_seq)
    data = [
        {
            "seq": e.seq,
            "at": e.at.isoformat(),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "details": e.details,
            "hash": e.hash,
        }
        for e in entries
    ]
    return JSONResponse({"object": "list", "data": data})


@router.get("/audit/verify", summary="Check the audit log's hash chain (platform admin)")
async def audit_verify(services: ServicesDep, principal: AdminDep) -> JSONResponse:
    await services.tenancy.require_platform_admin(principal)
    ok, first_bad = await services.tenancy.audit.verify()
    return JSONResponse({"ok": ok, "first_bad_seq": first_bad})
