"""Who is logged in, and whether a state-changing request really comes from our own page.

Reads need a live session cookie. Writes (every POST, PATCH and DELETE) also need: an
``Origin`` (or, failing that, ``Referer``) equal to the server's own origin under a host name it
answers to (the rule of :mod:`alize.api.hosts`, never the bare ``Host`` header: a rebinding page
sends its own name there) or one listed in ``chat.allowed_origins``, and the session's CSRF
token in the ``X-CSRF-Token`` header. The cookie itself is HttpOnly and SameSite=Strict, so no
script can read it and no other site can make the browser send it.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response

from alize.api.deps import Services, get_services
from alize.api.hosts import host_name, origin_allowed
from alize.chat.service import ChatServices
from alize.chat.sessions import NewSession, SessionInfo
from alize.errors import PermissionDeniedError

SESSION_COOKIE = "alize_chat_session"
CSRF_HEADER = "x-csrf-token"

#: sent with every chat page and asset: no inline script, nothing from elsewhere, no framing
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


async def check_origin(request: Request, services: Services) -> None:
    """403 unless the request's Origin (or Referer) is this server under a host name it answers
    to (``ALIZE_ALLOWED_HOSTS``, loopback names) or one listed in ``chat.allowed_origins``."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        origin = _origin_of(referer) if referer else None
    own_host = request.headers.get("host", request.url.netloc)
    if origin is not None:
        policy = services.hosts
        keys = (
            await services.tenancy.keys_exist() if policy.needs_keys_to_decide(host_name(own_host)) else False
        )
        extra = services.chat.settings.allowed_origins
        if origin_allowed(origin, own_host, policy, keys_exist=keys, extra=extra):
            return
    raise PermissionDeniedError("This request did not come from the chat page.", code="bad_origin")


async def get_chat(request: Request) -> Services:
    return await get_services(request)


AppDep = Annotated[Services, Depends(get_chat)]


async def reader(request: Request, services: AppDep) -> SessionInfo:
    return await services.chat.sessions.resolve(request.cookies.get(SESSION_COOKIE))


async def writer(request: Request, services: AppDep) -> SessionInfo:
    await check_origin(request, services)
    session = await services.chat.sessions.resolve(request.cookies.get(SESSION_COOKIE))
    session.check_csrf(request.headers.get(CSRF_HEADER))
    return session


ReaderDep = Annotated[SessionInfo, Depends(reader)]
WriterDep = Annotated[SessionInfo, Depends(writer)]


def _secure(request: Request, chat: ChatServices) -> bool:
    configured = chat.settings.secure_cookies
    return configured if configured is not None else request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, chat: ChatServices, new: NewSession) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        new.token,
        max_age=chat.settings.session_ttl_s,
        path="/",
        secure=_secure(request, chat),
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, request: Request, chat: ChatServices) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=_secure(request, chat), httponly=True, samesite="strict"
    )
