"""A lean keep-alive HTTP/1.1 client for the engines' plain-http hops: the llama.cpp worker on
loopback, and remote upstreams reached over ``http://`` with no proxy.

Why not httpx there: a profile of the gateway put httpx at about a fifth of the event loop's
time, and a streamed request through an ``httpx.AsyncClient`` cost 0.63 ms of CPU where a raw
asyncio client cost 0.05 ms (``bench/http_clients.py`` measures them side by side). Every
llama.cpp request makes two such calls (the prompt count, then the generation), so on a 2-core
machine that CPU is the gateway's own latency. This client is an :class:`asyncio.Protocol` fed
to llhttp (``httptools``, the C parser uvicorn already uses), with a small pool of idle
connections; nothing more. httpx stays for ``https://``, for proxies and for tests that plug in
an ``httpx`` transport (:func:`alize.engines.http_client.open_client` picks).

It raises httpx's own exception classes (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
``ReadError``, ``RemoteProtocolError``) so the engines map failures the same way whichever
client made the call. Its responses have the part of ``httpx.Response`` the engines use:
``status_code``, ``headers`` (lower-case names), ``aread``/``content``/``text``/``json``,
``aiter_lines`` and ``aclose``.

Semantics kept from httpx where the engines rely on them:

* the timeout is the longest wait for the next byte (httpx's read timeout), with its own
  connect timeout;
* a response closed before its end closes its connection (for llama.cpp, that cancels the
  slot); one read to its end goes back to the pool for the next request;
* at most ``max_connections`` requests are in flight; the next waits for one to end, up to its
  timeout (``httpx.PoolTimeout``), so a burst never opens more connections than that;
* an idle connection the server closed is never reused, and a request on a reused connection
  that the server closed before answering is sent once more on a new one (the race every
  keep-alive client has; no byte of a reply was seen, so nothing was half-read).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import quote, urlsplit

import httptools
import httpx

#: a body read whole (``aread``) larger than this is refused: the engines read only errors,
#: model lists, token counts and embeddings whole, never anything near it
MAX_BODY_BYTES = 64 * 1024 * 1024
#: stop reading from the socket while this much body waits unconsumed (a slow consumer of a
#: stream must not make the gateway buffer an upstream's whole reply)
_HIGH_WATER = 1024 * 1024
#: what stays as it is in a path (RFC 3986's pchar and "/", and existing %-escapes)
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
#: CR, LF and NUL would split or end a header line (a key read from the environment included)
_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")


class _Connection(asyncio.Protocol):
    """One TCP connection and the response being read on it, parsed as the bytes arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.closed = False
        self.reused = False
        self._begin()

    def _begin(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.seen_bytes = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: httpx.TransportError | None = None

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have asyncio.Transport's methods but are not its subclasses
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.seen_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response ({exc})"))

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and self.error is None and self._reads_to_eof():
            self.complete = True  # a body delimited by the connection's end
        elif not self.complete and self.error is None:
            if self.headers_done:
                self.error = httpx.RemoteProtocolError("the server closed the connection mid-response")
            else:
                self.error = httpx.RemoteProtocolError("the server closed the connection without a response")
        self._wake()

    def pause_writing(self) -> None:  # request bodies are small; the transport buffers them
        pass

    def resume_writing(self) -> None:
        pass

    # ------------------------------------------------------------ llhttp callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # ------------------------------------------------------------ used by the client

    def _reads_to_eof(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        )

    def _fail(self, error: httpx.TransportError) -> None:
        self.error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def send(self, request: bytes) -> None:
        assert self._transport is not None
        self._begin()
        self._transport.write(request)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def take(self) -> bytes:
        """The body bytes received and not yet consumed."""
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks.clear()
        self.buffered = 0
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._transport.resume_reading()
        return data

    async def wait(self, within_s: float) -> None:
        """Until something arrives (headers, body, the end, an error) or ``within_s`` passes."""
        if self.error is not None:
            raise self.error
        waiter = self._waiter = self._loop.create_future()
        handle = self._loop.call_later(within_s, _expire, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None
        if self.error is not None:
            raise self.error


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("timed out waiting for the server"))


class LeanResponse:
    """A response being read from its connection (the subset of ``httpx.Response`` engines use)."""

    def __init__(self, client: LeanHttpClient, conn: _Connection, timeout: float, *, last: bool) -> None:
        self._client, self._conn, self._timeout = client, conn, timeout
        #: the request asked for ``Connection: close``: never pooled, however the response ends
        self._last = last
        self.status_code = conn.status
        self.headers = conn.headers
        self._content: bytes | None = None
        self._released = False

    async def _chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.take()
            elif conn.complete:
                return
            else:
                await conn.wait(self._timeout)

    async def aread(self) -> bytes:
        if self._content is None:
            parts, size = [], 0
            try:
                async for chunk in self._chunks():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise httpx.RemoteProtocolError(f"the response body exceeds {MAX_BODY_BYTES} bytes")
                    parts.append(chunk)
            finally:
                await self.aclose()  # a body cut short closes its connection
            self._content = b"".join(parts)
        return self._content

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise httpx.ResponseNotRead()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines as they arrive, without their ``\\n`` or ``\\r\\n``."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        async for chunk in self._chunks():
            text = pending + decoder.decode(chunk)
            lines = text.split("\n")
            pending = lines.pop()
            for line in lines:
                yield line[:-1] if line.endswith("\r") else line
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending.removesuffix("\r")

    async def aclose(self) -> None:
        """Back to the pool when read to its end on a keep-alive connection, else closed."""
        self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        reusable = conn.complete and conn.keep_alive and not self._last and not conn.chunks
        self._client.release(conn, reusable=reusable)

    def __del__(self) -> None:
        # a stream its caller dropped unclosed (a generator never started, say) still gives
        # its connection slot back, or the cap would leak away (the slot is given back first;
        # closing the transport of a loop already closed raises, which is harmless here)
        with contextlib.suppress(RuntimeError):
            self._release()


class LeanHttpClient:
    """Keep-alive HTTP/1.1 to one ``http://host:port``; paths are joined onto the URL's path."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int = 32,
        spare: int = 0,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname or url.username is not None:
            raise ValueError(f"the lean client speaks plain http to a host, not {base_url!r}")
        self._host = url.hostname
        self._port = url.port or 80
        # percent-encoded as httpx would: no space or control character reaches the request line
        self._prefix = quote(url.path.rstrip("/"), safe=_PATH_SAFE)
        fixed = {"Host": url.netloc, "Accept": "*/*", "User-Agent": "alize", **(headers or {})}
        for name, value in fixed.items():
            if _UNSAFE_HEADER.search(name) or _UNSAFE_HEADER.search(value) or not name:
                raise ValueError(f"the header {name!r} has a character HTTP does not allow")
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._timeout_s, self._connect_timeout_s = timeout_s, connect_timeout_s
        self._idle: deque[_Connection] = deque()
        self._max_idle = max_connections
        #: at most this many requests in flight (open connections); more wait, as in httpx's pool
        self._slots = asyncio.Semaphore(max_connections)
        #: idle connections kept open ahead of need: a new one costs a request about 0.3 ms on
        #: loopback (the llama.cpp worker's), and its server closes each after a stream
        self._spare = spare
        self._refill: asyncio.Task[None] | None = None
        self._closed = False

    def url_path(self, path: str) -> str:
        return f"{self._prefix}/{quote(path.lstrip('/'), safe=_PATH_SAFE)}"

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(loop)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await loop.create_connection(lambda: conn, self._host, self._port)
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"no connection to {self._host}:{self._port} within {self._connect_timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self._host}:{self._port}: {exc}") from None
        return conn

    def _checkout(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def release(self, conn: _Connection, *, reusable: bool) -> None:
        """A request's end: its slot back, its connection to the pool or closed."""
        self._slots.release()
        if reusable and not conn.closed and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()
            self._top_up_soon()

    def _top_up_soon(self) -> None:
        if not self._spare or self._closed or self._refill is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # released from a finaliser outside the loop: the next request connects
            return
        self._refill = loop.create_task(self._top_up())

    async def _top_up(self) -> None:
        try:
            while not self._closed and sum(not c.closed for c in self._idle) < self._spare:
                conn = await self._connect()
                if self._closed:
                    conn.close()
                    return
                self._idle.appendleft(conn)  # the far end: a connection just used goes first
        except httpx.TransportError:
            pass  # the server is down or restarting: the next request connects (and reports) itself
        finally:
            self._refill = None

    async def _acquire(self, wait: float) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns at once
            return
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(
                f"no free connection to {self._host}:{self._port} within {wait:g} s"
            ) from None

    def _request_bytes(self, method: str, path: str, body: bytes | None, *, close: bool) -> bytes:
        head = f"{method} {self.url_path(path)} HTTP/1.1\r\n{self._head}"
        if close:
            head += "Connection: close\r\n"
        if body is None:
            return (head + "\r\n").encode("latin-1")
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode("latin-1") + body

    async def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        stream: bool = False,
        read_timeout_s: float | None = None,
        close: bool = False,
    ) -> LeanResponse:
        """Send one request and return once its headers have arrived; read whole unless ``stream``.
        ``close``: the connection ends with this response (``Connection: close``), for a server
        that closes it anyway, so it is never pooled and found dead by the next request."""
        if self._closed:
            raise httpx.ConnectError("the client is closed")
        body = None if json_body is None else json.dumps(json_body).encode()
        request = self._request_bytes(method, path, body, close=close)
        wait = self._timeout_s if read_timeout_s is None else read_timeout_s
        await self._acquire(wait)
        try:
            conn = await self._exchange(request, wait)
        except BaseException:
            self._slots.release()
            raise
        response = LeanResponse(self, conn, wait, last=close)  # owns the slot from here
        if not stream:
            await response.aread()
        return response

    async def _exchange(self, request: bytes, wait: float) -> _Connection:
        """Send ``request`` and wait for the response's headers; the connection it came on."""
        while True:
            conn = self._checkout() or await self._connect()
            try:
                conn.send(request)
                while not conn.headers_done:
                    await conn.wait(wait)
            except httpx.RemoteProtocolError:
                conn.close()
                if conn.reused and not conn.seen_bytes:
                    continue  # the server had closed the idle connection: once more on a new one
                raise
            except BaseException:
                conn.close()
                raise
            return conn

    async def aclose(self) -> None:
        self._closed = True
        refill, self._refill = self._refill, None
        if refill is not None:
            refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refill
        while self._idle:
            self._idle.pop().close()
