"""One helper for async iterators that may or may not be closable.

Events flow through layers as ``AsyncIterator``s; most are async generators (closable: closing
one runs its ``finally`` and cancels the engine work behind it), some are plain iterators.
Every layer that stops consuming early closes what it was reading with :func:`aclose`.
"""

from __future__ import annotations


async def aclose(iterator: object) -> None:
    """Close ``iterator`` if it has ``aclose`` (an async generator); do nothing otherwise."""
    closer = getattr(iterator, "aclose", None)
    if closer is not None:
        await closer()
