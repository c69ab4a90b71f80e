"""``POST /v1/chat/completions`` (OpenAI and Mistral clients)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from alize.api.auth import InferenceDep
from alize.api.deps import Services, ServicesDep, caller_identity
from alize.api.encode import collect_chat, stream_chat
from alize.api.respond import respond
from alize.api.translate import chat_call
from alize.gateway.auth import Principal
from alize.protocol.openai.chat import ChatCompletionRequest

router = APIRouter(tags=["chat"])


async def run_chat(
    body: ChatCompletionRequest, request: Request, services: Services, principal: Principal | None
) -> Response:
    call = chat_call(body)
    generation = await services.pipeline.chat(call, caller_identity(request, body.user), principal)
    want_logprobs = bool(body.logprobs)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await respond(
        generation,
        stream=body.stream,
        receive=request.receive,
        encode_stream=lambda g: stream_chat(
            g, n=call.n, include_usage=include_usage, want_logprobs=want_logprobs
        ),
        collect=lambda g: collect_chat(g, n=call.n, want_logprobs=want_logprobs),
    )


@router.post("/v1/chat/completions", summary="Create a chat completion (OpenAI / Mistral)")
async def chat_completions(
    body: ChatCompletionRequest, request: Request, services: ServicesDep, principal: InferenceDep
) -> Response:
    return await run_chat(body, request, services, principal)
