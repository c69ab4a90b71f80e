"""Refuse oversized bodies with 413 before they are read into memory."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alize.errors import PayloadTooLargeError


def replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A receive() that hands out the buffered messages, then defers to the real one."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


class BodySizeLimit:
    """Checks Content-Length up front and counts streamed (chunked) bodies as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int, *, per_path: dict[str, int] | None = None) -> None:
        """``per_path``: a larger (or smaller) limit for exact paths (file uploads)."""
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        declared: int | None = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None and declared > limit:
            await self._reject(send, limit)
            return
        if declared is not None or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            # The server enforces Content-Length framing, so the declared size is the real size.
            await self.app(scope, receive, send)
            return
        # Without a usable Content-Length (chunked upload), read the body here, counting, so an
        # oversized one is refused with 413 before any parser sees it; then replay it.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, replay([message]), send)
                return
            received += len(message.get("body", b""))
            if received > limit:
                await self._reject(send, limit)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await self.app(
            scope,
            replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive),
            send,
        )

    async def _reject(self, send: Send, limit: int) -> None:
        message = f"request body is larger than the limit of {limit} bytes"
        body = json.dumps({"error": PayloadTooLargeError(message).to_dict()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
