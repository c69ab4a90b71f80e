"""Turn a started generation into a JSON or SSE response with Alizé's headers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.responses import JSONResponse, Response

from alize.api.streaming import ClosingStreamingResponse, primed
from alize.gateway.generation import Generation
from alize.protocol.openai.common import WireModel


def generation_headers(generation: Generation) -> dict[str, str]:
    headers = {"x-request-id": generation.request_id, "x-alize-deployment": generation.deployment}
    if generation.cold_start_s is not None:
        headers["x-alize-cold-start-ms"] = str(int(generation.cold_start_s * 1000))
    headers.update(generation.headers)
    return headers


async def respond(
    generation: Generation,
    *,
    stream: bool,
    encode_stream: Callable[[Generation], AsyncIterator[bytes]],
    collect: Callable[[Generation], Awaitable[WireModel]],
) -> Response:
    headers = generation_headers(generation)
    if not stream:
        try:
            body = await collect(generation)
        finally:
            await generation.aclose()
        return Response(body.to_json(), media_type="application/json", headers=headers)
    generation.events = await primed(generation.events)
    return ClosingStreamingResponse(
        encode_stream(generation),
        on_close=generation.aclose,
        headers={**headers, "cache-control": "no-cache"},
    )


def json_response(model: WireModel, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_unset=True), headers=headers)
