"""Streaming replies whose generation is always closed, however the client leaves.

Starlette cancels the response task when the client disconnects; an async generator suspended
at ``yield`` would then be finalised whenever the garbage collector gets to it. Closing it here,
in ``finally``, cancels generation and frees the engine slot at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from alize.streams import aclose

T = TypeVar("T")


class ClosingStreamingResponse(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        on_close: Callable[[], Awaitable[None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._content = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await aclose(self._content)
            await self._on_close()


async def primed(source: AsyncIterator[T]) -> AsyncIterator[T]:
    """Pull the first item now, so errors before the first token become HTTP errors; then
    return an iterator over the same items that closes ``source`` when it is closed."""
    try:
        first = await anext(source)
    except StopAsyncIteration:
        return _replay(None, source)
    except BaseException:
        await aclose(source)
        raise
    return _replay(first, source)


async def _replay(first: T | None, source: AsyncIterator[T]) -> AsyncIterator[T]:
    try:
        if first is not None:
            yield first
        async for item in source:
            yield item
    finally:
        await aclose(source)
