"""One helper for async iterators that may or may not be closable.

Events flow through layers as ``AsyncIterator``s; most are async generators (closable: closing
one runs its ``finally`` and cancels the engine work behind it), some are plain iterators.
Every layer that stops consuming early closes what it was reading with :func:`aclose`.
:class:`Prefetched` starts fetching an iterator's first item at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar, cast

T = TypeVar("T")


async def aclose(iterator: object) -> None:
    """Close ``iterator`` if it has ``aclose`` (an async generator); do nothing otherwise."""
    closer = getattr(iterator, "aclose", None)
    if closer is not None:
        await closer()


class Prefetched(Generic[T]):
    """An async iterator whose first item is already being fetched, in a task started now.

    The generation path uses it so the engine starts on the prompt while the gateway finishes
    admission (the budget hold's database write): nothing is lost or reordered, the first item
    is simply waiting when the consumer asks. Closing it cancels that fetch if it is still
    running, then closes the source, whether or not it was ever iterated."""

    def __init__(self, source: AsyncIterator[T]) -> None:
        self._source = source
        self._first: asyncio.Task[tuple[bool, T | None]] | None = asyncio.ensure_future(self._fetch())

    async def _fetch(self) -> tuple[bool, T | None]:
        try:
            return True, await anext(self._source)
        except StopAsyncIteration:
            return False, None

    def __aiter__(self) -> Prefetched[T]:
        return self

    async def __anext__(self) -> T:
        first, self._first = self._first, None
        if first is None:
            return await anext(self._source)
        found, item = await first
        if not found:
            raise StopAsyncIteration
        return cast(T, item)

    async def aclose(self) -> None:
        first, self._first = self._first, None
        if first is not None:
            first.cancel()
            await asyncio.wait([first])  # the fetch's own outcome is dropped, never raised here
            if not first.cancelled():
                first.exception()  # retrieved: an engine error nobody asked for is not logged
        await aclose(self._source)
