"""Azure AI Model Inference routes: ``POST /models/chat/completions``, ``GET /models/info``.

``api-version`` is accepted (any value) and the ``api-key`` header is read by authentication.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from alize.api.auth import InferenceDep
from alize.api.chat_completions import run_chat
from alize.api.deps import ServicesDep
from alize.api.respond import json_response
from alize.deployments.manager import Deployment
from alize.gateway.auth import authorize_deployment
from alize.protocol.azure import AzureChatCompletionRequest, ModelInfo
from alize.protocol.openai.chat import ChatCompletionRequest

router = APIRouter(prefix="/models", tags=["azure"])
ApiVersion = Query(None, alias="api-version", description="Accepted for compatibility; any value works.")


@router.post("/chat/completions", summary="Chat completion (Azure AI Model Inference)")
async def azure_chat(
    body: AzureChatCompletionRequest,
    request: Request,
    services: ServicesDep,
    principal: InferenceDep,
    api_version: str | None = ApiVersion,
) -> Response:
    data = body.model_dump(exclude_unset=True)
    data["model"] = body.model or services.settings.default_model
    return await run_chat(ChatCompletionRequest.model_validate(data), request, services, principal)


@router.get("/info", summary="Model information (Azure AI Model Inference)")
async def azure_info(
    services: ServicesDep, principal: InferenceDep, api_version: str | None = ApiVersion
) -> JSONResponse:
    if principal is not None:
        authorize_deployment(principal, services.settings.default_model)
    deployment = services.deployments.get(services.settings.default_model)
    return json_response(
        ModelInfo(
            model_name=deployment.spec.model_id,
            model_type=model_type(deployment),
            model_provider_name="Alizé",
        )
    )


def model_type(deployment: Deployment) -> str:
    """The model's task in Azure's words: from its card, else from the loaded engine; a chat
    model is ``chat-completion`` (Azure's own examples), the others take the SDK's ``ModelType``
    values (``embeddings``, ``text_generation``)."""
    tasks = tuple((deployment.spec.card or {}).get("tasks") or ())
    if not tasks and deployment.loaded:
        info = deployment.engine.info
        tasks = ("chat",) if info.supports_chat else ("embeddings",) if info.supports_embeddings else ()
    if "chat" in tasks or not tasks:
        return "chat-completion"
    return "embeddings" if "embeddings" in tasks else "text_generation"
