"""``POST /v1/chat/completions`` answered without FastAPI's routing and dependency machinery.

Profiled on 2 cores (``py-spy --gil``, sequential requests against an instant upstream), about a
fifth of the event loop's time on a chat request went between the last of Alizé's ASGI gates and
the endpoint: Starlette's exception middleware, FastAPI's exit-stack middleware, the router's
match over every route, the request/response wrapper and the dependency solver. The hottest
route does not need them: this gate, the innermost of Alizé's own (so the host, observe, auth
and body-size gates have run), reads the body, validates it exactly as FastAPI would
(``json.loads`` then the request model) and calls the same :func:`~alize.api.chat_completions.run_chat`.

Anything it is not sure of goes to FastAPI unchanged, the body replayed: another method or
content type, a body that is not JSON or does not validate (so every 400/422 is FastAPI's and
the error handlers' own, byte for byte). Errors raised while answering go to the app's own
exception handlers, looked up as Starlette does. The FastAPI route stays: it documents the
operation in the OpenAPI schema and serves every request this gate passes on.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alize.api.auth import inference_principal
from alize.api.body_limit import replay
from alize.api.chat_completions import run_chat
from alize.api.deps import Services
from alize.protocol.openai.chat import ChatCompletionRequest

PATH = "/v1/chat/completions"


def _is_json(scope: Scope) -> bool:
    """``application/json`` (any parameters) or a ``+json`` type: what FastAPI parses as JSON.
    A request without a content type goes to FastAPI, which has its own rule for it."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = bytes(value).split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return False


def _find_route(routes: list[BaseRoute]) -> BaseRoute | None:
    """The FastAPI route of :data:`PATH` (what ``scope["route"]`` holds when FastAPI matched it:
    ``Observe`` labels the metrics with its path). Included routers are searched too, whether
    they list their routes (``routes``) or wrap the router they include (``original_router``)."""
    for route in routes:
        if getattr(route, "path", None) == PATH and "POST" in (getattr(route, "methods", None) or ()):
            return route
        nested = getattr(route, "routes", None)
        original = getattr(route, "original_router", None)
        if not isinstance(nested, list) and original is not None:
            nested = getattr(original, "routes", None)
        if isinstance(nested, list):
            found = _find_route(nested)
            if found is not None:
                return found
    return None


async def _not_served_here(_: Request) -> Response:
    raise RuntimeError("a label for the metrics, never routed to")  # pragma: no cover


#: what ``scope["route"]`` gets if the app's own route cannot be found (a FastAPI that hides it)
_LABEL = Route(PATH, _not_served_here, methods=["POST"])


def _handler_for(app: FastAPI, exc: Exception) -> Any:
    """The app's exception handler for ``exc``, by its class's MRO (as Starlette looks it up)."""
    for cls in type(exc).__mro__:
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler
    return None


async def _read_body(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """The whole body (``None`` if something else came first: a disconnect) and the messages it
    came in, which are replayed to FastAPI whenever this gate does not answer."""
    chunks: list[bytes] = []
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), messages


def _parse(body: bytes | None) -> ChatCompletionRequest | None:
    """The request as FastAPI would validate it, or ``None`` where FastAPI is left to say why not
    (no body, not JSON, not a valid request)."""
    if body is None:
        return None
    try:
        return ChatCompletionRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        return None


class DirectChatRoute:
    """Pure ASGI; see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: BaseRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") != PATH
            or not _is_json(scope)
        ):
            await self.app(scope, receive, send)
            return
        body, messages = await _read_body(receive)
        chat = _parse(body)
        if chat is None:
            await self.app(scope, replay(messages, receive), send)
            return
        app: FastAPI = scope["app"]
        if self._route is None:
            self._route = _find_route(app.routes) or _LABEL
        scope["route"] = self._route
        request = Request(scope, receive)
        services: Services = app.state.services
        response: Response
        try:
            principal = await inference_principal(request)
            response = await run_chat(chat, request, services, principal)
        except Exception as exc:
            handler = _handler_for(app, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)
