"""``POST /v1/completions`` (OpenAI text completions) and ``POST /v1/fim/completions`` (Mistral)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from alize.api.auth import InferenceDep
from alize.api.deps import ServicesDep, caller_identity
from alize.api.encode import collect_chat, collect_completion, stream_chat, stream_completion
from alize.api.respond import respond
from alize.api.translate import fim_call, text_call
from alize.protocol.openai.completions import CompletionRequest, FimRequest

router = APIRouter(tags=["completions"])


@router.post("/v1/completions", summary="Create a text completion (OpenAI)")
async def completions(
    body: CompletionRequest, request: Request, services: ServicesDep, principal: InferenceDep
) -> Response:
    call = text_call(body)
    generation = await services.pipeline.complete(call, caller_identity(request, body.user), principal)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await respond(
        generation,
        stream=body.stream,
        receive=request.receive,
        encode_stream=lambda g: stream_completion(g, include_usage=include_usage),
        collect=lambda g: collect_completion(g, n=call.n, want_logprobs=body.logprobs is not None),
    )


@router.post("/v1/fim/completions", summary="Fill in the middle between prompt and suffix (Mistral)")
async def fim_completions(
    body: FimRequest, request: Request, services: ServicesDep, principal: InferenceDep
) -> Response:
    """Mistral answers FIM in the chat-completion shape, so the chat encoders serve it."""
    generation = await services.pipeline.complete(fim_call(body), caller_identity(request), principal)
    return await respond(
        generation,
        stream=body.stream,
        receive=request.receive,
        encode_stream=lambda g: stream_chat(g, n=1, include_usage=True, want_logprobs=False),
        collect=lambda g: collect_chat(g, n=1, want_logprobs=False),
    )
