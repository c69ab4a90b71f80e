"""The OpenAPI document, told truly: every operation declares the errors it can answer, in the
shape the server really sends (``{"error": {...}}``, 422 included, not FastAPI's ``detail``), and
every success response has a schema.

Routers return prepared ``Response`` objects (the wire models are encoded once, in
``api/encode``), so FastAPI cannot infer their success schemas; they are filled in here from the
same wire models. The errors an operation can answer follow from where it sits (one rule each):

* every path: 400 (a malformed request, or a host name the server does not answer to);
* parameters or a body: 422; a body: 413;
* behind the API-key gate (``/v1``, ``/models``, ``/admin``, ``/catalog``): 401 and 403;
  the chat's own API: 401 (no session) and 403 (Origin or CSRF check);
* a path parameter, or an inference call naming a model: 404;
* changes under ``/admin`` or ``/chat``: 409;
* inference, moderation and chat login: 429 (rate limits, budget, login throttle) and 503
  (queue full, engine down, classifier unavailable).

A schemathesis run (``tests/api/test_fuzz.py``, ``make fuzz``) checks the document against the
server's answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from alize.api.auth import is_protected
from alize.protocol.moderation import MistralModerationResponse, OpenAIModerationResponse
from alize.protocol.openai.chat import ChatCompletion
from alize.protocol.openai.common import ErrorResponse
from alize.protocol.openai.completions import Completion
from alize.protocol.openai.embeddings import EmbeddingList
from alize.protocol.openai.models import ModelList, ModelObject

INFERENCE: dict[tuple[str, str], list[type[BaseModel]]] = {
    ("post", "/v1/chat/completions"): [ChatCompletion],
    ("post", "/models/chat/completions"): [ChatCompletion],
    ("post", "/v1/fim/completions"): [ChatCompletion],
    ("post", "/v1/completions"): [Completion],
    ("post", "/v1/embeddings"): [EmbeddingList],
    ("post", "/v1/moderations"): [OpenAIModerationResponse, MistralModerationResponse],
    ("post", "/v1/chat/moderations"): [MistralModerationResponse],
}
OTHER_SUCCESS: dict[tuple[str, str], list[type[BaseModel]]] = {
    ("get", "/v1/models"): [ModelList],
    ("get", "/v1/models/{model_id}"): [ModelObject],
}
STREAMING = {"/v1/chat/completions", "/models/chat/completions", "/v1/fim/completions", "/v1/completions"}
#: success bodies that are not JSON
MEDIA = {
    ("get", "/catalog"): "text/html",
    ("get", "/admin/api/usage.csv"): "text/csv",
    ("post", "/chat/api/conversations/{conversation_id}/messages"): "text/event-stream",
    ("post", "/chat/api/conversations/{conversation_id}/regenerate"): "text/event-stream",
}
THROTTLED = {*(path for _, path in INFERENCE), "/chat/api/login"}

_DESCRIPTIONS = {
    "400": "Bad request (malformed, unsupported, or a host name this server does not answer to)",
    "401": "No valid API key, or no chat session",
    "403": "The key or session may not do this",
    "404": "Not found (or not visible to the caller)",
    "409": "Conflicts with the current state",
    "413": "Request body too large",
    "422": "A field failed validation",
    "429": "Rate limit, budget or login throttle; see Retry-After",
    "503": "Temporarily unavailable (queue full, engine down); see Retry-After",
}


def _codes(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    codes = ["400"]
    if operation.get("parameters") or operation.get("requestBody"):
        codes.append("422")
    if operation.get("requestBody"):
        codes.append("413")
    chat = path.startswith("/chat/api")
    if is_protected(path) or chat or path == "/metrics":  # /metrics checks its key itself
        codes += ["401", "403"]
    if "{" in path or (method, path) in INFERENCE or path.startswith("/chat/api/conversations"):
        codes.append("404")
    if method in ("post", "patch", "delete") and (path.startswith("/admin") or chat):
        codes.append("409")
    if path in THROTTLED:
        codes += ["429", "503"]
    return codes


#: ``/ready`` answers 503 with its own small body while the default deployment loads
READY_503 = {
    "description": "The default deployment is still loading; see Retry-After",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["status", "model"],
                "properties": {"status": {"const": "loading"}, "model": {"type": "string"}},
            }
        }
    },
}


def _schema_of(models: list[type[BaseModel]], components: dict[str, Any]) -> dict[str, Any]:
    refs = []
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
        refs.append({"$ref": f"#/components/schemas/{model.__name__}"})
    return refs[0] if len(refs) == 1 else {"anyOf": refs}


def _fill_success(method: str, path: str, responses: dict[str, Any], components: dict[str, Any]) -> None:
    for status in ("200", "201"):
        if status not in responses:
            continue
        content = responses[status].setdefault("content", {})
        models = INFERENCE.get((method, path)) or OTHER_SUCCESS.get((method, path))
        media = MEDIA.get((method, path))
        if media is not None:
            responses[status]["content"] = {media: {"schema": {"type": "string"}}}
            continue
        if models:
            content["application/json"] = {"schema": _schema_of(models, components)}
        elif not content.get("application/json", {}).get("schema"):
            content["application/json"] = {"schema": {"type": "object"}}
        if path in STREAMING:
            content["text/event-stream"] = {"schema": {"type": "string"}}


def build_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components.update(
            ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs")
        )
        components["ErrorResponse"] = {
            k: v
            for k, v in ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}").items()
            if k != "$defs"
        }
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        for path, operations in doc["paths"].items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                _fill_success(method, path, responses, components)
                responses.pop("422", None)
                for code in _codes(method, path, operation):
                    responses[code] = {"description": _DESCRIPTIONS[code], "content": error}
                if path == "/ready":
                    responses["503"] = READY_503
        app.openapi_schema = doc
        return doc

    return openapi
