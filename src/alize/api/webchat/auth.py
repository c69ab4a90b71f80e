"""Log in, log out, and who am I (``/chat/api/login``, ``/logout``, ``/me``)."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from alize.api.webchat.security import (
    SESSION_COOKIE,
    AppDep,
    ReaderDep,
    WriterDep,
    check_origin,
    clear_session_cookie,
    set_session_cookie,
)
from alize.chat.accounts import UserInfo
from alize.chat.sessions import csrf_for

router = APIRouter(prefix="/chat/api", tags=["chat web app"])

Language = Literal["en", "fr", "de", "es", "it"]


class LoginBody(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class MeBody(BaseModel):
    language: Language | None = None


def _me(user: UserInfo, csrf_token: str) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "language": user.language, "csrf_token": csrf_token}


@router.post("/login", summary="Log in to the chat (sets the session cookie)")
async def login(body: LoginBody, request: Request, response: Response, services: AppDep) -> dict[str, Any]:
    chat = services.chat
    await check_origin(request, services)  # no session yet: the Origin check guards login CSRF
    address = request.client.host if request.client else "unknown"
    user = await chat.login.login(body.email, body.password, address)
    new = await chat.sessions.create(user)
    set_session_cookie(response, request, chat, new)
    return _me(user, new.csrf_token)


@router.post("/logout", summary="Log out (ends the session)")
async def logout(request: Request, response: Response, _: WriterDep, services: AppDep) -> dict[str, bool]:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await services.chat.sessions.revoke(token)
    clear_session_cookie(response, request, services.chat)
    return {"ok": True}


@router.get("/me", summary="The logged-in user and the session's CSRF token")
async def me(request: Request, session: ReaderDep) -> dict[str, Any]:
    return _me(session.user, csrf_for(request.cookies.get(SESSION_COOKIE, "")))


@router.patch("/me", summary="Save the user's interface language")
async def update_me(body: MeBody, request: Request, session: WriterDep, services: AppDep) -> dict[str, Any]:
    user = await services.chat.users.set_language(session.user.id, body.language)
    return _me(user, csrf_for(request.cookies.get(SESSION_COOKIE, "")))


@router.get(
    "/me/export",
    summary="Download everything stored about the logged-in user (JSON; GDPR access and portability)",
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def export_me(session: ReaderDep, services: AppDep) -> Response:
    body = await services.chat.privacy.export(session.user.id)
    return Response(
        json.dumps(body, ensure_ascii=False, indent=2),
        media_type="application/json",
        headers={
            "Content-Disposition": 'attachment; filename="alize-my-data.json"',
            "Cache-Control": "no-store",
        },
    )
