"""The chunks a stream has ready together leave as one; nothing waits to be merged; order,
errors and cancellation are as if the stream were read directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from alize.coalesce import coalesced


async def test_chunks_ready_together_are_merged_and_a_wait_flushes_them_first() -> None:
    gate = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"
        await gate.wait()  # the engine's next token
        yield b"c"
        await asyncio.sleep(0)  # a bare yield is a wait too
        yield b"d"
        yield b"e"

    merged = coalesced(source())
    # "a" and "b" came without a wait: one chunk, and it leaves before the gate opens
    assert await asyncio.wait_for(anext(merged), 1) == b"ab"
    reading = asyncio.ensure_future(anext(merged))
    await asyncio.sleep(0.01)
    assert not reading.done()  # nothing is sent before the source has it
    gate.set()
    assert await asyncio.wait_for(reading, 1) == b"c"
    assert [chunk async for chunk in merged] == [b"de"]


async def test_merging_stops_at_the_byte_bound() -> None:
    async def source() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 4

    assert [chunk async for chunk in coalesced(source(), max_bytes=8)] == [b"x" * 8, b"x" * 8, b"x" * 4]


async def test_an_error_comes_after_the_chunks_before_it() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"
        raise ValueError("upstream broke")

    merged = coalesced(source())
    assert await anext(merged) == b"ab"
    with pytest.raises(ValueError, match="upstream broke"):
        await anext(merged)


async def test_an_error_after_a_wait_is_raised_from_the_wait() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b"a"
        await asyncio.sleep(0.001)
        raise ValueError("late")

    merged = coalesced(source())
    assert await anext(merged) == b"a"
    with pytest.raises(ValueError, match="late"):
        await anext(merged)


async def test_closing_while_the_source_waits_cancels_its_wait_and_runs_its_cleanup() -> None:
    waiting = asyncio.Event()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def source() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            waiting.set()
            await never
            yield b"unreachable"
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            await asyncio.sleep(0)  # cleanup may wait, as settling a request does
            seen.append("cleaned up")

    merged = coalesced(source())
    # "a" is flushed when the source starts waiting: the reader leaves with the source mid-wait
    assert await anext(merged) == b"a"
    assert waiting.is_set()
    await merged.aclose()
    assert never.cancelled()
    assert seen == ["cancelled", "cleaned up"]


async def test_closing_between_chunks_closes_the_source() -> None:
    closed: list[bool] = []

    async def source() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            await asyncio.sleep(0.001)
            yield b"b"
            await asyncio.sleep(3600)
        finally:
            closed.append(True)

    merged = coalesced(source())
    assert await anext(merged) == b"a"
    assert await anext(merged) == b"b"
    await merged.aclose()
    assert closed == [True]


async def test_cancelling_the_reader_cancels_the_source_in_its_task() -> None:
    seen: list[str] = []

    async def source() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            await asyncio.sleep(3600)
            yield b"b"
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def read() -> list[bytes]:
        return [chunk async for chunk in coalesced(source())]

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0.01)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert seen == ["cancelled"]


async def test_closing_after_the_awaited_future_is_done_still_cancels_the_source() -> None:
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def source() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            await ready
            seen.append("went on")  # a cancelled source must not run on to its next wait
            await never
            yield b"unreachable"
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    merged = coalesced(source())
    assert await anext(merged) == b"a"  # the source is now waiting on ``ready``
    ready.set_result(None)  # the engine answers while the reader is away...
    await asyncio.wait_for(merged.aclose(), 1)  # ...and then the reader leaves
    assert seen == ["cancelled"]
