"""A real, tiny OpenAI-compatible HTTP server that fails on demand: the upstream that the
resilience tests (tests/e2e/test_resilience.py) point a remote deployment at.

``python tests/e2e/flaky_upstream.py PORT NAME`` serves on 127.0.0.1:PORT:

* ``GET /v1/models``: lists the model ``flaky`` (always, so a deployment can load);
* ``POST /v1/chat/completions``: streams ``"Hello from NAME"`` (or fails) as the next mode says;
* ``POST /control`` ``{"script": [...], "mode": "..."}``: the modes the next requests take, in
  order, then ``mode`` for every one after; answers ``{"calls": n}``, the chat calls so far.

Modes: ``ok``; ``slow`` (40 tokens, 0.15 s apart, for a kill mid-stream); ``500``;
``429:SECONDS`` (with that ``Retry-After``); ``hang`` (accepts, never answers); ``garbage``
(a 200 with an HTML page). Every response closes its connection. Standard library only.
"""

from __future__ import annotations

import asyncio
import json
import sys

HTML = b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"


class State:
    def __init__(self, name: str) -> None:
        self.name = name
        self.script: list[str] = []
        self.mode = "ok"
        self.calls = 0

    def next_mode(self) -> str:
        return self.script.pop(0) if self.script else self.mode


def _response(status: int, body: bytes, content_type: str = "application/json", extra: str = "") -> bytes:
    reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


def _event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _chunk(text: str, finish: str | None = None) -> dict[str, object]:
    choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
    return {"id": "c1", "object": "chat.completion.chunk", "model": "flaky", "choices": [choice]}


async def _stream(writer: asyncio.StreamWriter, words: list[str], gap_s: float) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
    for word in words:
        writer.write(_event(_chunk(word)))
        await writer.drain()
        if gap_s:
            await asyncio.sleep(gap_s)
    writer.write(_event(_chunk("", "stop")))
    usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
    writer.write(_event({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    writer.write(b"data: [DONE]\n\n")


async def _chat(state: State, writer: asyncio.StreamWriter) -> None:
    state.calls += 1
    mode = state.next_mode()
    if mode == "ok":
        await _stream(writer, ["Hello", " from", f" {state.name}"], 0)
    elif mode == "slow":
        await _stream(writer, [f" {state.name}{i}" for i in range(40)], 0.15)
    elif mode == "500":
        writer.write(_response(500, b'{"error": {"message": "scripted failure"}}'))
    elif mode.startswith("429:"):
        body = b'{"error": {"message": "slow down"}}'
        writer.write(_response(429, body, extra=f"retry-after: {mode[4:]}\r\n"))
    elif mode == "hang":
        await asyncio.sleep(3600)
    elif mode == "garbage":
        writer.write(_response(200, HTML, "text/html"))
    else:
        raise ValueError(mode)


async def _handle(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request_line = (await reader.readline()).decode()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        method, path = request_line.split()[:2]
        if path == "/v1/models":
            listed = {"object": "list", "data": [{"id": "flaky", "object": "model"}]}
            writer.write(_response(200, json.dumps(listed).encode()))
        elif path == "/control" and method == "POST":
            if body:
                control = json.loads(body)
                state.script = list(control.get("script", []))
                state.mode = control.get("mode", state.mode)
            writer.write(_response(200, json.dumps({"calls": state.calls}).encode()))
        elif path == "/v1/chat/completions" and method == "POST":
            await _chat(state, writer)
        else:
            writer.write(_response(404, b'{"error": {"message": "not found"}}'))
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(port: int, name: str) -> None:
    state = State(name)
    server = await asyncio.start_server(lambda r, w: _handle(state, r, w), "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
