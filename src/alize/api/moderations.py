"""``POST /v1/moderations`` (OpenAI and Mistral shapes) and ``POST /v1/chat/moderations`` (Mistral).

OpenAI and Mistral use the same path with different category sets, so the reply's shape follows
the ``model`` the client names, the way each vendor's documentation has its clients call it:

* ``mistral-moderation-latest`` (any ``mistral-moderation-*``): Mistral's shape, nine categories;
* no model, ``alize-moderation-1``, ``omni-moderation-*`` or ``text-moderation-*``: OpenAI's
  shape, thirteen categories with ``flagged``;
* anything else: 404 ``model_not_found`` (never a silent fallback).

The classifier runs in a worker thread; inputs are capped in count and size
(``Settings.safety``). Each call goes through the policy pipeline like any other: the key's
and project's rate limits, the project's budget at the model's price (``safety.model_prices``,
else ``safety.price_per_million``; 0 by default),
and one usage row (before, a key limited to 2 RPM made 10 calls of 2,000 words each, unmetered).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from alize.api.auth import InferenceDep
from alize.api.deps import Services, ServicesDep
from alize.api.respond import served_by
from alize.deployments.specs import Prices
from alize.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from alize.gateway.auth import Principal
from alize.gateway.tickets import BatchLine, Moderated
from alize.protocol.moderation import (
    MistralChatModerationRequest,
    OpenAIModerationRequest,
    dump,
)
from alize.safety.moderator import ModerationResult
from alize.safety.render import DEFAULT_MODEL, to_mistral, to_openai

log = logging.getLogger(__name__)
router = APIRouter(tags=["moderations"])

MISTRAL_MODEL = "mistral-moderation-latest"
OPENAI_PREFIXES = ("omni-moderation", "text-moderation")


def _dialect(model: str | None) -> str:
    if model is None or model == DEFAULT_MODEL or model.startswith(OPENAI_PREFIXES):
        return "openai"
    if model.startswith("mistral-moderation"):
        return "mistral"
    raise ModelNotFoundError(model)


def _check_size(services: Services, count: int, chars: int) -> None:
    limits = services.settings.safety
    if count == 0:
        raise InvalidRequestError("input must not be empty", param="input")
    if count > limits.max_inputs:
        raise InvalidRequestError(f"at most {limits.max_inputs} inputs per call", param="input")
    if chars > limits.max_input_chars:
        raise PayloadTooLargeError(
            f"inputs hold {chars} characters; at most {limits.max_input_chars} per call", param="input"
        )


async def _results(classify: Callable[[], list[ModerationResult]]) -> list[ModerationResult]:
    try:
        return await asyncio.to_thread(classify)
    except Exception as exc:
        log.error("the moderation classifier failed: %s: %s", type(exc).__name__, exc)
        raise ServiceUnavailableError(
            f"the moderation classifier is unavailable ({type(exc).__name__})", code="classifier_unavailable"
        ) from None


async def _metered(
    services: Services,
    principal: Principal | None,
    model: str | None,
    chars: int,
    classify: Callable[[], list[ModerationResult]],
    *,
    project_id: str | None = None,
    line: BatchLine | None = None,
) -> Moderated[list[ModerationResult]]:
    safety = services.settings.safety
    name = model or DEFAULT_MODEL
    prices = Prices(safety.model_prices.get(name, safety.price_per_million), 0)
    return await services.pipeline.moderate(
        name, chars, principal, lambda: _results(classify), prices, project_id=project_id, line=line
    )


async def moderate_texts(
    services: Services,
    principal: Principal | None,
    body: OpenAIModerationRequest,
    *,
    project_id: str | None = None,
    line: BatchLine | None = None,
) -> tuple[dict[str, object], Moderated[list[ModerationResult]]]:
    """``/v1/moderations``' reply body (for the route and for batch lines)."""
    dialect = _dialect(body.model)
    texts = body.texts()
    chars = sum(len(t) for t in texts)
    _check_size(services, len(texts), chars)
    done = await _metered(
        services,
        principal,
        body.model,
        chars,
        lambda: services.moderator.classify(texts),
        project_id=project_id,
        line=line,
    )
    shape = to_mistral if dialect == "mistral" else to_openai
    return dump(shape(done.result, body.model)), done


async def moderate_conversations(
    services: Services,
    principal: Principal | None,
    body: MistralChatModerationRequest,
    *,
    project_id: str | None = None,
    line: BatchLine | None = None,
) -> tuple[dict[str, object], Moderated[list[ModerationResult]]]:
    """``/v1/chat/moderations``' reply body (for the route and for batch lines)."""
    if body.model is not None and body.model != DEFAULT_MODEL and _dialect(body.model) != "mistral":
        raise ModelNotFoundError(body.model)
    conversations = body.conversation_texts()
    _check_size(services, len(conversations), sum(len(t) for conv in conversations for t in conv))
    if any(not conv for conv in conversations):
        raise InvalidRequestError("every conversation needs at least one message", param="input")
    chars = sum(len(t) for conv in conversations for t in conv)
    done = await _metered(
        services,
        principal,
        body.model,
        chars,
        lambda: services.moderator.classify_conversations(conversations),
        project_id=project_id,
        line=line,
    )
    return dump(to_mistral(done.result, body.model)), done


def _reply(
    body: dict[str, object], done: Moderated[list[ModerationResult]], model: str | None
) -> JSONResponse:
    # AI Act transparency: every answer names the model and what served it (the built-in classifier)
    name = model or DEFAULT_MODEL
    headers = {**done.headers, **served_by(name, name)}
    return JSONResponse(body, headers=headers)


@router.post("/v1/moderations", summary="Classify texts (OpenAI or Mistral shape, by model)")
async def moderations(
    body: OpenAIModerationRequest, services: ServicesDep, principal: InferenceDep
) -> JSONResponse:
    reply, done = await moderate_texts(services, principal, body)
    return _reply(reply, done, body.model)


@router.post("/v1/chat/moderations", summary="Classify conversations (Mistral shape)")
async def chat_moderations(
    body: MistralChatModerationRequest, services: ServicesDep, principal: InferenceDep
) -> JSONResponse:
    reply, done = await moderate_conversations(services, principal, body)
    return _reply(reply, done, body.model)
