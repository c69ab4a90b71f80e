"""``/admin/api/chat/users``: the chat's accounts, for administrators (GDPR: list, disable,
erase).

A platform admin sees every project's users, a project admin only its own project's (anything
else is 404, as if it did not exist). Deleting a user *erases* them: the account and every
conversation, message, document, passage, embedding, session and agent go in one transaction,
usage rows stay under a pseudonym, and the reply says how many of each were removed. Every change
is audited by user id, never by email (the audit log is append-only, erasure cannot reach it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from alize.api.auth import AdminDep
from alize.api.deps import ServicesDep
from alize.chat.accounts import UserSummary
from alize.gateway.tenancy import audit_admin_action

router = APIRouter(prefix="/admin/api/chat", tags=["admin: chat users"])


class ChatUserOut(BaseModel):
    id: str
    object: str = "chat.user"
    project_id: str
    email: str
    language: str | None
    created_at: datetime
    disabled_at: datetime | None


class ChatUserList(BaseModel):
    object: str = "list"
    data: list[ChatUserOut]


class ChatUserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project_id: str | None = Field(None, max_length=40, description="Default: the caller's project.")
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=8, max_length=1024)


class ChatUserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disabled: bool = Field(description="true: the user is logged out everywhere and cannot log in.")


class ErasureOut(BaseModel):
    id: str
    object: str = "chat.user.erasure"
    deleted: bool = True
    project_id: str
    removed: dict[str, int] = Field(description="Rows deleted: conversations, messages, documents...")
    usage_rows_pseudonymised: int
    pseudonym: str = Field(description="What the user's usage rows are recorded under now.")


def _out(user: UserSummary) -> ChatUserOut:
    return ChatUserOut(
        id=user.id,
        project_id=user.project_id,
        email=user.email,
        language=user.language,
        created_at=user.created_at,
        disabled_at=user.disabled_at,
    )


ProjectQuery = Annotated[str | None, Query(max_length=40, description="One project (default: all visible).")]


@router.get("/users", summary="List chat users", response_model=ChatUserList)
async def list_users(
    services: ServicesDep, principal: AdminDep, project_id: ProjectQuery = None
) -> ChatUserList:
    chosen = await services.tenancy.visible_project_id(principal, project_id)
    return ChatUserList(data=[_out(u) for u in await services.chat.users.list(chosen)])


@router.post("/users", status_code=201, summary="Create a chat user", response_model=ChatUserOut)
async def create_user(body: ChatUserCreate, services: ServicesDep, principal: AdminDep) -> ChatUserOut:
    default = principal.project_id if principal is not None else await services.tenancy.default_project_id()
    project = await services.tenancy.visible_project_id(principal, body.project_id or default) or default
    info = await services.chat.users.create(project, body.email, body.password)
    await audit_admin_action(
        services.tenancy.audit, principal, "chat_user.create", info.id, {"project_id": project}
    )
    return _out(await services.chat.users.get(info.id))


@router.get("/users/{user_id}", summary="One chat user", response_model=ChatUserOut)
async def get_user(user_id: str, services: ServicesDep, principal: AdminDep) -> ChatUserOut:
    scope = await services.tenancy.project_scope(principal)
    return _out(await services.chat.users.get(user_id, project_id=scope))


@router.patch("/users/{user_id}", summary="Disable or enable a chat user", response_model=ChatUserOut)
async def update_user(
    user_id: str, body: ChatUserPatch, services: ServicesDep, principal: AdminDep
) -> ChatUserOut:
    scope = await services.tenancy.project_scope(principal)
    user = await services.chat.users.set_disabled(user_id, body.disabled, project_id=scope)
    action = "chat_user.disable" if body.disabled else "chat_user.enable"
    await audit_admin_action(
        services.tenancy.audit, principal, action, user_id, {"project_id": user.project_id}
    )
    return _out(user)


@router.delete(
    "/users/{user_id}",
    summary="Erase a chat user and all their data (GDPR); usage rows stay, pseudonymised",
    response_model=ErasureOut,
)
async def erase_user(user_id: str, services: ServicesDep, principal: AdminDep) -> ErasureOut:
    scope = await services.tenancy.project_scope(principal)
    report = await services.chat.privacy.erase(user_id, project_id=scope)
    details = {
        "project_id": report.project_id,
        "removed": report.removed,
        "usage_rows_pseudonymised": report.usage_rows_pseudonymised,
    }
    await audit_admin_action(services.tenancy.audit, principal, "chat_user.erase", user_id, details)
    return ErasureOut(
        id=user_id,
        project_id=report.project_id,
        removed=report.removed,
        usage_rows_pseudonymised=report.usage_rows_pseudonymised,
        pseudonym=report.pseudonym,
    )
