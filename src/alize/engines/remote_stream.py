"""Reading an upstream's reply stream: its server-sent events as Alizé's deltas, and every way
it can go wrong as a 502 ``upstream_error``, never a silent end.

A malformed event, an ``error`` event, a stall longer than the upstream's timeout, a lost
connection, a 200 whose body is no event stream (an HTML page, a JSON error, nothing) and a
stream that ends before the reply did (the upstream died) each raise :class:`UpstreamError` and,
except the error event (the upstream answering), count as a failure on the replica's circuit
breaker. An upstream that ignores ``stream_options.include_usage`` gets a final delta counting
what came and estimating the prompt. The first delta carries how many retries the call took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace

import httpx

from alize.domain import Delta, FinishReason, GenerationRequest, Usage
from alize.engines.http_client import EngineResponse
from alize.engines.openai_wire import ChunkDecoder
from alize.engines.remote_http import Upstream
from alize.engines.remote_wire import estimate_prompt_tokens, upstream_message
from alize.errors import UpstreamError

#: what may follow an upstream's ``[DONE]`` before its body ends (the chunked encoding's last
#: chunk, blank lines), and how long to wait for it
_TRAILER_BYTES, _TRAILER_WAIT_S = 4096, 0.5


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read a stream's body to its end after ``[DONE]``, so its keep-alive connection goes back
    to the pool: a response closed unread is a connection closed, and every request then paid
    for a new one (a TCP, or TLS, handshake: seen as one per request in a profile). An upstream
    that keeps sending, or takes longer than a moment, is cut as before."""
    read = 0
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(_TRAILER_WAIT_S):
            async for line in lines:
                read += len(line) + 1
                if read > _TRAILER_BYTES:
                    return


async def stream_deltas(
    response: EngineResponse, upstream: Upstream, request: GenerationRequest, retries: int
) -> AsyncGenerator[Delta, None]:
    """The deltas of a streamed reply; closes ``response`` however it ends (closing it early
    is the upstream's signal to stop generating)."""
    host, breaker = upstream.host, upstream.breaker
    decoder = ChunkDecoder()
    streamed, finished, events, done = 0, False, 0, False
    try:
        lines = response.aiter_lines()
        async for line in lines:
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                events, done = events + 1, True
                await _drain(lines)
                break
            try:
                chunk = json.loads(payload)
            except ValueError:
                breaker.failure()
                raise UpstreamError(f"the upstream {host} sent a malformed event") from None
            events += 1
            if isinstance(chunk, dict) and chunk.get("error"):
                message, _ = upstream_message(payload.encode(), 500)
                raise UpstreamError(f"the upstream {host} failed mid-stream: {upstream.redact(message)}")
            delta = decoder.decode(chunk)
            if delta is None:
                continue
            streamed += delta.tokens
            finished = finished or delta.usage is not None
            if retries:  # the first delta says how many retries the reply took
                delta, retries = replace(delta, retries=retries), 0
            yield delta
    except httpx.TimeoutException:
        breaker.failure()
        raise UpstreamError(f"the upstream {host} stopped sending for {upstream.timeout_s:g} s") from None
    except httpx.TransportError as exc:
        breaker.failure()
        raise UpstreamError(f"lost the upstream {host} mid-stream ({type(exc).__name__})") from None
    finally:
        await response.aclose()  # early close: the upstream sees the disconnect and stops
    if not events:
        # a 200 whose body is no event stream (an HTML page, a JSON error, nothing at all)
        breaker.failure()
        raise UpstreamError(f"the upstream {host} answered with no event stream")
    if not done and decoder.finish is None:
        # the connection ended before the reply did (the upstream died): never a silent end
        breaker.failure()
        raise UpstreamError(f"the upstream {host} closed the stream before the reply ended")
    if not finished:
        # an upstream that ignores stream_options: count what came, estimate the prompt
        yield Delta(
            tool_calls=decoder.tool_calls(),
            finish_reason=decoder.finish or FinishReason.STOP,
            usage=Usage(prompt_tokens=estimate_prompt_tokens(request), completion_tokens=streamed),
            retries=retries,
        )
