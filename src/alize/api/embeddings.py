"""``POST /v1/embeddings`` (OpenAI and Mistral clients)."""

from __future__ import annotations

import base64
import struct

from fastapi import APIRouter, Request
from fastapi.responses import Response

from alize.api.auth import InferenceDep
from alize.api.deps import ServicesDep, caller_identity
from alize.api.respond import served_by
from alize.errors import InvalidRequestError
from alize.gateway.embeddings import EmbeddingResult
from alize.protocol.openai.embeddings import EmbeddingData, EmbeddingList, EmbeddingRequest, EmbeddingUsage

router = APIRouter(tags=["embeddings"])


def embedding_texts(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if all(isinstance(item, str) for item in value):
        return [str(item) for item in value]
    raise InvalidRequestError(
        "token arrays are not supported as embeddings input; send the text itself", param="input"
    )


def encode_vector(vector: tuple[float, ...], encoding: str | None) -> list[float] | str:
    """A float list, or base64 of the little-endian float32 bytes (what OpenAI returns)."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)


def embedding_reply(body: EmbeddingRequest, result: EmbeddingResult) -> EmbeddingList:
    return EmbeddingList(
        id=result.request_id,
        data=[
            EmbeddingData(embedding=encode_vector(v, body.encoding_format), index=i)
            for i, v in enumerate(result.vectors)
        ],
        model=result.deployment,
        usage=EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )


@router.post("/v1/embeddings", summary="Create embeddings (OpenAI / Mistral)")
async def create_embeddings(
    body: EmbeddingRequest, request: Request, services: ServicesDep, principal: InferenceDep
) -> Response:
    result = await services.pipeline.embed(
        body.model,
        embedding_texts(body.input),
        caller_identity(request, body.user),
        principal,
        dimensions=body.dimensions or body.output_dimension,
    )
    reply = embedding_reply(body, result)
    headers = {"x-request-id": result.request_id, **served_by(result.deployment, result.model)}
    if result.cold_start_s is not None:
        headers["x-alize-cold-start-ms"] = str(int(result.cold_start_s * 1000))
    headers.update(result.route.headers())  # the deployments left on the way (fallbacks)
    return Response(reply.to_json(), media_type="application/json", headers=headers)
