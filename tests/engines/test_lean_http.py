"""The lean HTTP/1.1 client against real loopback servers that answer the ways servers do:
content-length, chunked and connection-delimited bodies, keep-alive and its races, garbage,
hangs and early closes. It must read each correctly, reuse what can be reused, and fail with
httpx's exception classes (what the engines catch) where a server misbehaves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from alize.engines import lean_http
from alize.engines.http_client import HttpxEngineClient, open_client
from alize.engines.lean_http import LeanHttpClient

Reply = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]


class Server:
    """Accepts connections on 127.0.0.1 and answers each request with ``reply(n, request,
    writer)``; ``reply`` returns False to close the connection after it."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.reader = reader  # the latest connection's, for a reply that waits for the client
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                keep = await self.reply(len(self.requests), request, writer)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
        finally:
            writer.close()


@asynccontextmanager
async def serving(reply: Reply) -> AsyncIterator[Server]:
    server = Server(reply)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def client(server: Server, **kw: float) -> LeanHttpClient:
    return LeanHttpClient(
        f"http://127.0.0.1:{server.port}",
        headers={"Authorization": "Bearer k"},
        timeout_s=kw.get("timeout_s", 5.0),
        connect_timeout_s=2.0,
    )


def fixed(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_json_round_trips_on_one_connection() -> None:
    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        body = json.loads(request.split(b"\r\n\r\n", 1)[1])
        writer.write(fixed(json.dumps({"n": n, "echo": body}).encode(), extra="x-Thing: A\r\nX-Thing: B\r\n"))
        return True

    async with serving(reply) as server:
        http = client(server)
        seen = [await http.send("POST", "/v1/echo", json_body={"i": i}) for i in range(3)]
        await http.aclose()
    assert [r.json() for r in seen] == [{"n": i + 1, "echo": {"i": i}} for i in range(3)]
    assert [r.status_code for r in seen] == [200, 200, 200]
    assert seen[0].headers["x-thing"] == "A, B"
    assert server.connections == 1
    first = server.requests[0].decode()
    assert first.startswith("POST /v1/echo HTTP/1.1\r\n")
    assert "Authorization: Bearer k\r\n" in first and f"Host: 127.0.0.1:{server.port}\r\n" in first


async def test_chunked_stream_lines_survive_any_split() -> None:
    """Lines cut across chunks, CRLF endings, a multi-byte character cut in two, a last line
    without its newline: every line comes out whole, and the connection is reused after."""
    text = "data: héllo\r\n\r\ndata: wörld 🌍\n\ndata: [DONE]"
    raw = text.encode()
    pieces = [raw[:7], raw[7:8], raw[8:25], raw[25:27], raw[27:]]

    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in pieces:
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        return True

    async with serving(reply) as server:
        http = client(server)
        for _ in range(2):
            response = await http.send("POST", "/s", json_body={}, stream=True)
            lines = [line async for line in response.aiter_lines()]
            await response.aclose()
            assert lines == ["data: héllo", "", "data: wörld 🌍", "", "data: [DONE]"]
        await http.aclose()
    assert server.connections == 1


async def test_a_body_ended_by_the_connection_is_read_and_not_reused() -> None:
    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\ndata: a\n\ndata: b\n\n")
        return False

    async with serving(reply) as server:
        http = client(server)
        for _ in range(2):
            response = await http.send("GET", "/s", stream=True)
            assert [line async for line in response.aiter_lines()] == ["data: a", "", "data: b", ""]
            await response.aclose()
        await http.aclose()
    assert server.connections == 2


async def test_an_idle_connection_closed_by_the_server_is_not_reused() -> None:
    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(fixed(b"{}"))  # keep-alive by default, but the server hangs up anyway
        return False

    async with serving(reply) as server:
        http = client(server)
        await http.send("GET", "/a")
        await asyncio.sleep(0.05)
        assert (await http.send("GET", "/b")).status_code == 200
        await http.aclose()
    assert server.connections == 2 and len(server.requests) == 2


async def test_a_reused_connection_dropped_before_any_answer_is_retried_once_on_a_new_one() -> None:
    """The keep-alive race: the server drops the connection as the next request arrives. The
    request goes once more on a fresh connection; a fresh connection that drops is an error."""

    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 2:
            return False  # read the request, answer nothing, hang up
        writer.write(fixed(b'{"ok": true}'))
        return True

    async with serving(reply) as server:
        http = client(server)
        await http.send("GET", "/one")
        assert (await http.send("GET", "/two")).json() == {"ok": True}
        await http.aclose()
    assert server.connections == 2 and len(server.requests) == 3

    async def never(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    async with serving(never) as server:
        http = client(server)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.send("GET", "/x")
        await http.aclose()
    assert len(server.requests) == 1


async def test_garbage_a_truncated_body_and_a_hang_raise_httpx_errors() -> None:
    async def garbage(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SMTP ready\r\n\r\n")
        return True

    async def truncated(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        return False

    async def hang(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async with serving(garbage) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await client(server).send("GET", "/")
    async with serving(truncated) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="mid-response"):
            await client(server).send("GET", "/")
    async with serving(hang) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(httpx.ReadTimeout):
            await client(server, timeout_s=0.2).send("GET", "/")
        assert loop.time() - started < 2.0


async def test_no_listener_is_a_connect_error() -> None:
    async with serving(lambda n, r, w: asyncio.sleep(0, False)) as server:
        port = server.port
    with pytest.raises(httpx.ConnectError):
        await LeanHttpClient(f"http://127.0.0.1:{port}", timeout_s=1, connect_timeout_s=1).send("GET", "/")


async def test_closing_a_stream_early_closes_its_connection() -> None:
    """How llama.cpp learns that the client went away: the connection closes under it."""

    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(200):
            writer.write(b"8\r\ndata: x\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
        return True

    async with serving(reply) as server:
        http = client(server)
        response = await http.send("GET", "/s", stream=True)
        lines = response.aiter_lines()
        assert await anext(lines) == "data: x"
        await response.aclose()
        await asyncio.wait_for(server.closed_by_client.wait(), 5)
        await http.aclose()


async def test_a_whole_body_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean_http, "MAX_BODY_BYTES", 1000)

    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(fixed(b"x" * 5000))
        return True

    async with serving(reply) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="exceeds"):
            await client(server).send("GET", "/")


def test_open_client_uses_httpx_for_tls_proxies_and_test_transports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    common = {"timeout_s": 5.0, "connect_timeout_s": 1.0, "max_connections": 4}
    assert isinstance(open_client("http://10.0.0.5:8000", **common), LeanHttpClient)
    assert isinstance(open_client("https://api.example.eu", **common), HttpxEngineClient)
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    assert isinstance(open_client("http://10.0.0.5:8000", transport=mock, **common), HttpxEngineClient)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    assert isinstance(open_client("http://10.0.0.5:8000", **common), HttpxEngineClient)
    # the worker on loopback never goes through a proxy, whatever the environment says
    assert isinstance(open_client("http://127.0.0.1:9000", direct=True, **common), LeanHttpClient)
    monkeypatch.setenv("NO_PROXY", "10.0.0.5")
    assert isinstance(open_client("http://10.0.0.5:8000", **common), LeanHttpClient)


def test_it_runs_on_uvloop_as_the_server_does() -> None:
    """uvicorn serves on uvloop, whose transports are not asyncio's classes."""
    import uvloop  # installed with uvicorn[standard], a dependency

    async def scenario() -> list[str]:
        async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"6\r\ndata: \r\n2\r\nok\r\n0\r\n\r\n")
            return True

        async with serving(reply) as server:
            http = client(server)
            seen = []
            for _ in range(2):
                response = await http.send("POST", "/s", json_body={}, stream=True)
                seen += [line async for line in response.aiter_lines()]
                await response.aclose()
            await http.aclose()
            assert server.connections == 1
            return seen

    assert uvloop.run(scenario()) == ["data: ok", "data: ok"]


async def test_requests_beyond_the_cap_wait_for_a_connection_and_time_out_after_their_timeout() -> None:
    """A burst never opens more connections than the cap: the third stream waits until one of
    the first two ends, and one that cannot get a connection in time gets httpx.PoolTimeout.
    A stream dropped without being closed gives its slot back too."""
    release = asyncio.Event()

    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"0\r\n\r\n")
        return True

    async with serving(reply) as server:
        http = LeanHttpClient(
            f"http://127.0.0.1:{server.port}", timeout_s=5.0, connect_timeout_s=2.0, max_connections=2
        )
        first = await http.send("GET", "/1", stream=True)
        second = await http.send("GET", "/2", stream=True)
        with pytest.raises(httpx.PoolTimeout):
            await http.send("GET", "/3", stream=True, read_timeout_s=0.2)
        assert server.connections == 2
        third = asyncio.create_task(http.send("GET", "/3", stream=True))
        await asyncio.sleep(0.1)
        assert not third.done()
        await first.aclose()
        waited = await asyncio.wait_for(third, 5)
        del second  # dropped unclosed
        fourth = await asyncio.wait_for(http.send("GET", "/4", stream=True), 5)
        release.set()
        for response in (waited, fourth):
            assert [line async for line in response.aiter_lines()] == []
            await response.aclose()
        await http.aclose()


async def test_a_body_that_stalls_midway_times_out_and_closes_its_connection() -> None:
    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart of it")
        await writer.drain()
        if await asyncio.wait_for(server.reader.read(1), 5) == b"":
            server.closed_by_client.set()  # the client hung up
        return False

    async with serving(reply) as server:
        http = client(server, timeout_s=0.2)
        with pytest.raises(httpx.ReadTimeout):
            await http.send("GET", "/")
        await asyncio.wait_for(server.closed_by_client.wait(), 5)
        await http.aclose()


async def test_paths_are_percent_encoded_and_header_injection_is_refused() -> None:
    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(fixed(b"{}"))
        return True

    async with serving(reply) as server:
        http = LeanHttpClient(f"http://127.0.0.1:{server.port}/a b", timeout_s=5, connect_timeout_s=2)
        await http.send("GET", "/x\r\nEvil: 1")
        await http.aclose()
    assert server.requests[0].split(b"\r\n")[0] == b"GET /a%20b/x%0D%0AEvil:%201 HTTP/1.1"
    for headers in ({"Authorization": "Bearer k\r\nX-Evil: 1"}, {"X\nY": "v"}):
        with pytest.raises(ValueError, match="character"):
            LeanHttpClient("http://127.0.0.1:1", headers=headers, timeout_s=1, connect_timeout_s=1)
    with pytest.raises(ValueError):
        LeanHttpClient("http://user:pw@127.0.0.1:1", timeout_s=1, connect_timeout_s=1)
    common = {"timeout_s": 5.0, "connect_timeout_s": 1.0, "max_connections": 4}
    assert isinstance(open_client("http://user:pw@10.0.0.5:8000", **common), HttpxEngineClient)


async def test_a_request_that_asks_to_close_is_never_pooled() -> None:
    """llama.cpp's server closes a connection once a stream ends: the engine asks for that, so
    the next call opens a new connection rather than sending into one about to die."""

    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(fixed(b"{}"))  # keep-alive as far as the response says
        return True

    async with serving(reply) as server:
        http = client(server)
        await http.send("POST", "/stream", json_body={}, close=True)
        await http.send("GET", "/next")
        await http.aclose()
    assert b"Connection: close\r\n" in server.requests[0]
    assert b"Connection: close" not in server.requests[1]
    assert server.connections == 2


async def test_a_spare_connection_is_opened_ahead_of_the_next_request() -> None:
    """With ``spare=1`` a connection that closed (a stream's) is replaced in the background, so
    the next request does not wait for a connect; a server that is gone only stops the refill."""

    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(fixed(b"{}"))
        return True

    async with serving(reply) as server:
        http = LeanHttpClient(f"http://127.0.0.1:{server.port}", timeout_s=5, connect_timeout_s=2, spare=1)
        await http.send("POST", "/stream", json_body={}, close=True)
        for _ in range(100):
            if server.connections == 2:
                break
            await asyncio.sleep(0.01)
        assert server.connections == 2 and len(server.requests) == 1  # opened, not yet used
        await http.send("GET", "/next")
        assert server.connections == 2 and len(server.requests) == 2
        await http.aclose()
    port = server.port
    gone = LeanHttpClient(f"http://127.0.0.1:{port}", timeout_s=1, connect_timeout_s=1, spare=1)
    gone._top_up_soon()
    await asyncio.sleep(0.1)
    with pytest.raises(httpx.ConnectError):
        await gone.send("GET", "/")
    await gone.aclose()
