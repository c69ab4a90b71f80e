"""Streaming replies whose generation is always closed, however the client leaves.

A client that disconnects stops the response where it waits; an async generator suspended
at ``yield`` would then be finalised whenever the garbage collector gets to it. Closing it here,
in ``finally``, cancels generation and frees the engine slot at once. The chunks the content
has ready together are sent as one (:mod:`alize.coalesce`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from alize.coalesce import coalesced
from alize.streams import aclose

T = TypeVar("T")


async def until_disconnected(receive: Receive) -> None:
    """Return when the client has gone (the body was read before, so only this can come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class ClosingStreamingResponse(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        on_close: Callable[[], Awaitable[None]],
        headers: dict[str, str] | None = None,
    ) -> None:
        # the chunks ready together leave in one write (alize.coalesce says why)
        merged = coalesced(content)
        super().__init__(merged, media_type="text/event-stream", headers=headers)
        self._content = merged  # closing it closes ``content``
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream_until_disconnected(receive, send)
        finally:
            await aclose(self._content)
            await self._on_close()

    async def _stream_until_disconnected(self, receive: Receive, send: Send) -> None:
        """Send the body, and stop where it waits if the client leaves meanwhile (a normal end,
        as in Starlette). Starlette watches in an anyio task group: two tasks and a cancel
        scope per stream, about 7% of the gateway's CPU on a short stream (py-spy). Here the
        watch is one task whose callback cancels this one; ``uncancel`` tells that cancel from
        any other, which is raised as ever."""
        task = asyncio.current_task()
        assert task is not None
        streaming, left = True, False

        def on_disconnect(watch: asyncio.Future[None]) -> None:
            nonlocal left
            if streaming and not watch.cancelled() and watch.exception() is None:
                left = True
                task.cancel()

        watch = asyncio.ensure_future(until_disconnected(receive))
        watch.add_done_callback(on_disconnect)
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not (left and task.uncancel() == 0):
                raise
        finally:
            streaming = False  # before any await: a late disconnect must not cancel what follows
            watch.cancel()


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
