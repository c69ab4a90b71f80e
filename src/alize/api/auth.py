"""Who is calling: an ASGI gate that turns request headers into a gateway ``Principal``, and the
FastAPI dependencies routers use to read it.

Until any API key exists the platform is open (bind to loopback); once one exists, every
``/v1``, ``/models``, ``/admin`` and ``/catalog`` route requires a key, whatever router serves it (so routes
added later are covered too): 401 ``invalid_api_key`` without a valid one, 403 for an inference
key on ``/admin``. Keys come from ``Authorization: Bearer``, ``api-key`` (Azure) or
``x-api-key`` (:func:`extract_api_key`, the only code that reads them from headers); anything
odd in those headers is simply not a key (401, never 500). Checking the key is the gateway's
(:class:`~alize.gateway.auth.Authenticator`). The dependencies authenticate again only when the
gate did not run (an app without it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from alize.api.deps import Services
from alize.api.errors import error_response
from alize.errors import AlizeError
from alize.gateway.auth import Principal, require_admin
from alize.gateway.keys import is_credential

#: ``/catalog`` too: it lists deployments and their prices, which only callers with a key may see
PROTECTED_PREFIXES = ("/v1", "/models", "/admin", "/catalog")
ADMIN_PREFIX = "/admin"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


#: the admin console's shell and assets: static files with no data in them (the console's own
#: calls to ``/admin/api`` carry the admin key like any client's; see :mod:`alize.api.console`)
CONSOLE_PAGE, CONSOLE_ASSETS = "/admin", "/admin/console"


def is_protected(path: str) -> bool:
    if path == CONSOLE_PAGE or _under(path, CONSOLE_ASSETS):
        return False
    return any(_under(path, prefix) for prefix in PROTECTED_PREFIXES)


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The first value of each header (latin-1 never fails to decode; odd bytes are just text)."""
    found: dict[str, str] = {}
    for name, value in raw:
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def extract_api_key(headers: Mapping[str, str]) -> str | None:
    """The credential from ``Authorization: Bearer``, ``api-key`` or ``x-api-key`` (in that order).

    Returns ``None`` for anything that cannot be one of our keys (wrong scheme, too long,
    non-ASCII, spaces or control characters): odd input is never an exception.
    """
    found: dict[str, str] = {}
    try:
        for name, value in headers.items():
            lowered = name.lower() if isinstance(name, str) else ""
            if lowered in ("authorization", "api-key", "x-api-key") and isinstance(value, str):
                found.setdefault(lowered, value)
    except (AttributeError, TypeError, UnicodeError):
        return None
    candidates: list[str] = []
    auth = found.get("authorization")
    if auth is not None:
        scheme, _, credential = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            candidates.append(credential.strip())
    candidates.extend(found[h].strip() for h in ("api-key", "x-api-key") if h in found)
    return next((c for c in candidates if is_credential(c)), None)


async def authenticate(services: Services, headers: Mapping[str, str], path: str) -> Principal | None:
    """The caller's principal, ``None`` in open mode; raises 401/403 as typed errors."""
    tenancy = services.tenancy
    if not await tenancy.keys_exist():
        return None
    principal = await tenancy.auth.authenticate(extract_api_key(headers))
    if _under(path, ADMIN_PREFIX):
        require_admin(principal)
    return principal


class AuthGate:
    """Pure ASGI (no buffering, streaming untouched): authenticate protected paths up front."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        try:
            principal = await authenticate(services, _headers(scope.get("headers", [])), scope["path"])
        except AlizeError as exc:
            await error_response(exc)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["authenticated"] = True
        await self.app(scope, receive, send)


async def _principal(request: Request) -> Principal | None:
    if getattr(request.state, "authenticated", False):
        principal: Principal | None = getattr(request.state, "principal", None)
        return principal
    services: Services = request.app.state.services
    principal = await authenticate(services, request.headers, request.url.path)
    request.state.principal = principal
    request.state.authenticated = True
    return principal


async def inference_principal(request: Request) -> Principal | None:
    """The caller of an inference route, or None while the platform has no keys."""
    return await _principal(request)


async def admin_principal(request: Request) -> Principal | None:
    """The caller of an admin route (an admin key), or None while the platform has no keys."""
    principal = await _principal(request)
    if principal is not None:
        require_admin(principal)
    return principal


InferenceDep = Annotated[Principal | None, Depends(inference_principal)]
AdminDep = Annotated[Principal | None, Depends(admin_principal)]
