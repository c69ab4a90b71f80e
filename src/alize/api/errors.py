"""The one place errors become HTTP: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from alize.errors import AlizeError, InvalidRequestError, NotFoundError, ValidationFailedError

log = logging.getLogger(__name__)


def error_response(error: AlizeError, headers: dict[str, str] | None = None) -> JSONResponse:
    merged = dict(error.headers)
    merged.update(headers or {})
    return JSONResponse({"error": error.to_dict()}, status_code=error.status_code, headers=merged)


def error_event(error: AlizeError) -> str:
    """The final SSE payload of a stream that failed after it started."""
    return json.dumps({"error": error.to_dict()})


def _param(loc: tuple[object, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> AlizeError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return InvalidRequestError("the request body is not valid JSON", code="invalid_json")
    param = _param(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value"))
    detail = f"{param}: {message}" if param else message
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ValidationFailedError(detail, param=param)


def install_error_handlers(app: FastAPI) -> None:
    async def on_alize(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AlizeError)
        if exc.status_code >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(NotFoundError("no such route", code="route_not_found"))
        err = AlizeError(str(exc.detail), code="http_error")
        return JSONResponse(
            {"error": {**err.to_dict(), "type": "invalid_request_error"}}, status_code=exc.status_code
        )

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(AlizeError("internal server error"))

    app.add_exception_handler(AlizeError, on_alize)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
