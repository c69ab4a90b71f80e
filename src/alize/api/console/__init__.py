"""The admin console: ``/admin`` serves a static shell, ``/admin/console/...`` its assets.

No data is in the page: its script asks for an admin key, keeps it in ``sessionStorage`` (this
tab only, gone when it closes) and calls the admin JSON API (``/admin/api/...``) with it in the
``Authorization`` header, exactly as any other admin client. Because the browser never sends that
credential on its own (no cookie), another site cannot make it act for the operator: there is no
ambient authority for a cross-site request to ride on, so no CSRF token is needed. The page and
its assets carry the chat page's strict Content-Security-Policy (scripts from this origin only,
no inline script, no framing), and every value is rendered as text (``dom.js``, no ``innerHTML``).
These two paths are the only ones under ``/admin`` that need no key (:func:`alize.api.auth.is_protected`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from alize.api.webchat.pages import MEDIA_TYPES
from alize.api.webchat.pages import STATIC as CHAT_STATIC
from alize.api.webchat.security import SECURITY_HEADERS
from alize.errors import NotFoundError

router = APIRouter(tags=["admin console"], include_in_schema=False)

STATIC = Path(__file__).resolve().parent / "static"
#: the console builds its DOM with the chat page's helpers (one home for "text, never markup")
SHARED = {"js/dom.js": CHAT_STATIC / "js" / "dom.js"}
_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}


@router.get("/admin")
async def console() -> Response:
    return FileResponse(STATIC / "index.html", media_type=MEDIA_TYPES[".html"], headers=_HEADERS)


@router.get("/admin/console/{path:path}")
async def asset(path: str) -> Response:
    target = SHARED.get(path) or (STATIC / path).resolve()
    allowed = path in SHARED or target.is_relative_to(STATIC)
    if not allowed or not target.is_file() or target.suffix not in MEDIA_TYPES:
        raise NotFoundError("no such file", code="route_not_found")
    return FileResponse(target, media_type=MEDIA_TYPES[target.suffix], headers=_HEADERS)
