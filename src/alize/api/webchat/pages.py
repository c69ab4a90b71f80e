"""The page itself: ``/`` and ``/c/{id}`` serve the app shell, ``/chat/static/...`` its assets.

Assets are plain files under ``alize/api/webchat/static`` (ES modules, CSS, translations), served with
a strict Content-Security-Policy. ``/c/{id}`` answers 404 when a logged-in user opens a
conversation that is not theirs (the page then says so too).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from alize.api.webchat.security import SECURITY_HEADERS, SESSION_COOKIE, AppDep
from alize.errors import AlizeError, NotFoundError

router = APIRouter(tags=["chat web app"], include_in_schema=False)

STATIC = Path(__file__).resolve().parent / "static"

MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _shell(status: int = 200) -> Response:
    return FileResponse(
        STATIC / "index.html",
        status_code=status,
        media_type=MEDIA_TYPES[".html"],
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


@router.get("/")
async def index() -> Response:
    return _shell()


@router.get("/c/{conversation_id}")
async def conversation_page(conversation_id: str, request: Request, services: AppDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        try:
            session = await services.chat.sessions.resolve(token)
        except AlizeError:
            return _shell()  # not logged in: the page shows the login form
        try:
            await services.chat.conversations.get(session.user.id, conversation_id)
        except NotFoundError:
            return _shell(404)
    return _shell()


@router.get("/chat/static/{path:path}")
async def static(path: str) -> Response:
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC) or not target.is_file() or target.suffix not in MEDIA_TYPES:
        raise NotFoundError("no such file", code="route_not_found")
    return FileResponse(
        target,
        media_type=MEDIA_TYPES[target.suffix],
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )
