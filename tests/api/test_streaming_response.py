"""A streaming reply stops where it waits when its client leaves, closes its content and calls
``on_close`` whatever happens; a cancel that is not the client leaving is still raised."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from alize.api.streaming import ClosingStreamingResponse

SCOPE: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "POST"}


class Client:
    """The ASGI side of one connection: what was sent, and a disconnect to give on demand."""

    def __init__(self, *, leaves_at_the_end: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self.leaves_at_the_end = leaves_at_the_end

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if self.leaves_at_the_end and message.get("more_body") is False:
            self.gone.set()  # the connection closes as the last byte goes out
            await asyncio.sleep(0)  # the watch sees it before the response has returned

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body" and m["body"]]


def _response(content: AsyncIterator[bytes], closed: list[str]) -> ClosingStreamingResponse:
    async def on_close() -> None:
        closed.append("on_close")

    return ClosingStreamingResponse(content, on_close=on_close)


async def test_a_client_that_leaves_mid_wait_ends_the_response_normally() -> None:
    closed: list[str] = []
    client = Client()

    async def content() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            client.gone.set()  # the client leaves while the engine works on the next token
            await asyncio.sleep(3600)
            yield b"data: 2\n\n"
        finally:
            closed.append("content")

    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(_response(content(), closed)(SCOPE, client.receive, client.send), 5)
    assert loop.time() - start < 2  # stopped by the disconnect, not by the timeout
    assert client.bodies() == [b"data: 1\n\n"]
    assert closed == ["content", "on_close"]
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # the disconnect's cancel is spent


async def test_a_disconnect_as_the_stream_ends_cancels_nothing_after_it() -> None:
    closed: list[str] = []
    client = Client(leaves_at_the_end=True)

    async def content() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    await _response(content(), closed)(SCOPE, client.receive, client.send)
    await asyncio.sleep(0.01)  # the response is over: this sleep is not interrupted
    assert client.bodies() == [b"ab"]  # ready together: one write
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert closed == ["on_close"]


async def test_a_cancel_from_elsewhere_is_raised_and_still_closes() -> None:
    closed: list[str] = []
    client = Client()
    started = asyncio.Event()

    async def content() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            started.set()
            await asyncio.sleep(3600)
            yield b"b"
        finally:
            closed.append("content")

    running = asyncio.ensure_future(_response(content(), closed)(SCOPE, client.receive, client.send))
    await started.wait()
    running.cancel()  # a server shutting down, not the client
    with pytest.raises(asyncio.CancelledError):
        await running
    assert closed == ["content", "on_close"]
