"""The HTTP side of observability: a request id for every request (set for the logs and sent
back as ``x-request-id`` unless a route already set one, e.g. the ledger id), and the HTTP
counters by route template. Pure ASGI, so streams pass through untouched."""

from __future__ import annotations

import time

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alize.api.deps import Services
from alize.observability.logs import new_request_id, request_id

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _route(scope: Scope) -> str:
    """The matched route's template (bounded), or ``other`` for unmatched paths (unbounded)."""
    route = scope.get("route")
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return path if isinstance(path, str) else "other"


class Observe:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                offered = value.decode("latin-1")
                break
        rid = new_request_id(offered)
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            services: Services | None = getattr(scope["app"].state, "services", None)
            method = scope.get("method", "GET")
            if services is not None:
                services.observability.metrics.http(
                    _route(scope),
                    method if method in _METHODS else "OTHER",
                    status,
                    time.perf_counter() - started,
                )
