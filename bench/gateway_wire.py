"""The two ends of bench/gateway.py's measurements, both raw asyncio over keep-alive HTTP/1.1 so
that neither costs the 2-core machine much of what the gateways under test need:

* :func:`serve_fake` (``python bench/gateway_wire.py PORT``): a tiny OpenAI-compatible upstream
  that answers every chat completion with the same 5-token reply at once, as JSON or as an SSE
  stream (with the usage chunk and ``[DONE]``), and lists the model ``fake`` on ``/v1/models``.
  No parsing beyond the request line, the headers and ``"stream": true`` in the body.
* :class:`RawClient`: one keep-alive connection sending a prebuilt request and reading the whole
  response (``content-length`` or chunked), timing the first body byte and the last.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

MODEL = "fake"
WORDS = ["Hello", " from", " the", " fake", " upstream"]
USAGE = {"prompt_tokens": 12, "completion_tokens": len(WORDS), "total_tokens": 12 + len(WORDS)}


def _json_reply() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1764547200,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(WORDS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    ).encode()


def _sse_reply() -> bytes:
    def event(delta: dict[str, str], finish: str | None = None) -> bytes:
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1764547200,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    parts = [event({"role": "assistant", "content": ""})]
    parts += [event({"content": w}) for w in WORDS]
    parts.append(event({}, "stop"))
    usage = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [],
        "usage": USAGE,
    }
    parts.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def _http(body: bytes, content_type: str, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


JSON_RESPONSE = _http(_json_reply(), "application/json")
SSE_RESPONSE = _http(_sse_reply(), "text/event-stream")
MODELS_RESPONSE = _http(
    json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode(), "application/json"
)
NOT_FOUND = _http(b'{"error": {"message": "not found"}}', "application/json", "404 Not Found")


class _FakeUpstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            path = head.split(" ", 2)[1]
            assert self.transport is not None
            if path.endswith("/chat/completions"):
                streamed = b'"stream": true' in body or b'"stream":true' in body
                self.transport.write(SSE_RESPONSE if streamed else JSON_RESPONSE)
            elif path.endswith("/models"):
                self.transport.write(MODELS_RESPONSE)
            else:
                self.transport.write(NOT_FOUND)


async def serve_fake(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_FakeUpstream, "127.0.0.1", port, backlog=1024)
    print(f"fake upstream on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


@dataclass(frozen=True, slots=True)
class Timing:
    status: int
    first_byte_s: float
    total_s: float
    body: bytes


class RawClient:
    """One keep-alive HTTP/1.1 connection to ``host:port`` (reopened if the server closes it)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    async def send(self, request: bytes) -> Timing:
        """Send ``request`` and read the whole response; a kept-alive connection the server closed
        while idle (it answers nothing) is reopened once."""
        reused = self._writer is not None
        try:
            return await self._send(request)
        except ConnectionError:
            if not reused:
                raise
            return await self._send(request)

    async def _send(self, request: bytes) -> Timing:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        reader, writer = self._reader, self._writer
        assert reader is not None
        started = time.perf_counter()
        writer.write(request)
        status_line = await reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = None, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        first: float | None = None
        parts: list[bytes] = []
        if chunked:
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                first = first or time.perf_counter()
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readline()
        elif length is not None:
            parts.append(await reader.readexactly(length))
            first = time.perf_counter()
        else:
            parts.append(await reader.read())
            first, close = time.perf_counter(), True
        done = time.perf_counter()
        if close:
            await self.close()
        return Timing(status, first - started, done - started, b"".join(parts))


def chat_request(host: str, port: int, path: str, key: str, *, stream: bool, model: str) -> bytes:
    """The one request every system gets: a short chat, 16 tokens at most."""
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(serve_fake(int(sys.argv[1])))
    except ImportError:
        asyncio.run(serve_fake(int(sys.argv[1])))
