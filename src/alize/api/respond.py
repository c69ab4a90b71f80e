"""Turn a started generation into a JSON or SSE response with Alizé's headers.

A client that leaves must free its slot at once, streamed or not. Streams are closed by
Starlette cancelling the response (``api/streaming``); a non-streamed reply has no response
being sent while it is generated, so here the ASGI receive channel is watched for
``http.disconnect`` while the reply is collected: when it comes, collecting stops and the
generation is closed, which cancels the engine's work and settles the request as
``client_disconnected`` (before this, three dropped 256-token chats ran to the end, held their
slots and were metered as ``success``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.responses import JSONResponse, Response
from starlette.types import Receive

from alize.api.streaming import ClosingStreamingResponse, primed, until_disconnected
from alize.gateway.generation import Generation
from alize.protocol.openai.common import WireModel


def served_by(deployment: str, model: str) -> dict[str, str]:
    """AI Act transparency: every response names the deployment that served it and the catalog
    model whose weights produced it (the body's ``model`` is the deployment the client called)."""
    return {"x-alize-deployment": deployment, "x-alize-model": model or deployment}


def generation_headers(generation: Generation) -> dict[str, str]:
    """Read once the first event is in (streamed) or the reply collected: by then a fallback
    has chosen the deployment that serves, and the retries are counted."""
    route = generation.route
    deployment = route.served_by or generation.deployment
    headers = {"x-request-id": generation.request_id, **served_by(deployment, generation.model)}
    if generation.cold_start_s is not None:
        headers["x-alize-cold-start-ms"] = str(int(generation.cold_start_s * 1000))
    headers.update(route.headers())
    headers.update(generation.headers)
    return headers


#: what a request whose client left gets (nobody reads it; nginx's "client closed request")
CLIENT_CLOSED = 499


async def respond(
    generation: Generation,
    *,
    stream: bool,
    encode_stream: Callable[[Generation], AsyncIterator[bytes]],
    collect: Callable[[Generation], Awaitable[WireModel]],
    receive: Receive | None = None,
) -> Response:
    """``receive``: the request's ASGI channel, watched for a disconnect while collecting."""
    if not stream:
        collecting = asyncio.ensure_future(collect(generation))
        watching = asyncio.ensure_future(until_disconnected(receive)) if receive is not None else None
        try:
            await asyncio.wait(
                [t for t in (collecting, watching) if t is not None], return_when="FIRST_COMPLETED"
            )
            if not collecting.done():
                collecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collecting
                return Response(status_code=CLIENT_CLOSED)
            body = collecting.result()
        finally:
            if watching is not None:
                watching.cancel()
            if not collecting.done():
                collecting.cancel()
            await generation.aclose()
        return Response(body.to_json(), media_type="application/json", headers=generation_headers(generation))
    generation.events = await primed(generation.events)
    return ClosingStreamingResponse(
        encode_stream(generation),
        on_close=generation.aclose,
        headers={**generation_headers(generation), "cache-control": "no-cache"},
    )


def json_response(model: WireModel, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_unset=True), headers=headers)
