"""The HTTP client an engine calls its upstream with: the lean one where it can, httpx elsewhere.

Engines see one small interface (:class:`EngineHttpClient`: ``send`` and ``aclose``; responses
as :class:`EngineResponse`) and the same exceptions (httpx's) from both implementations, so the
failure mapping in :mod:`alize.engines.remote_http` and the llama.cpp engine is written once.

:func:`open_client` picks :class:`alize.engines.lean_http.LeanHttpClient` for a plain ``http://``
upstream reached directly, where it costs about a tenth of httpx's CPU per call, and httpx for
``https://`` (TLS), when a proxy is configured in the environment for a remote host (httpx honours
``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY``), and when a test plugs in an httpx transport.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from alize.engines.lean_http import LeanHttpClient


class EngineResponse(Protocol):
    """The part of a response the engines read (``httpx.Response`` has it, as does the lean one)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...

    async def aread(self) -> bytes: ...

    def aiter_lines(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


class EngineHttpClient(Protocol):
    """Requests to one upstream origin; ``path`` is the whole path on it (``/v1/models``)."""

    async def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        stream: bool = False,
        read_timeout_s: float | None = None,
        close: bool = False,
    ) -> EngineResponse: ...

    async def aclose(self) -> None: ...


class HttpxEngineClient:
    """:class:`EngineHttpClient` over an ``httpx.AsyncClient`` (TLS, proxies, test transports)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        stream: bool = False,
        read_timeout_s: float | None = None,
        close: bool = False,
    ) -> EngineResponse:
        extra: dict[str, Any] = {} if read_timeout_s is None else {"timeout": read_timeout_s}
        if close:
            extra["headers"] = {"Connection": "close"}
        request = self._client.build_request(method, path, json=json_body, **extra)
        return await self._client.send(request, stream=stream)

    async def aclose(self) -> None:
        await self._client.aclose()


def _proxied(url: str) -> bool:
    """Whether requests for ``url`` go through the environment's proxy: ``HTTP_PROXY`` or
    ``ALL_PROXY`` set and the host not in ``NO_PROXY``, as httpx reads them; a loopback host
    never does (a proxy cannot reach this machine's own listeners)."""
    proxies = urllib.request.getproxies()
    if not proxies.get("http") and not proxies.get("all"):
        return False
    host = urlsplit(url).hostname or ""
    return not urllib.request.proxy_bypass(host) and host not in ("127.0.0.1", "localhost", "::1")


def open_client(
    origin: str,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float,
    connect_timeout_s: float,
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
    direct: bool = False,
    spare: int = 0,
) -> EngineHttpClient:
    """A client for ``origin`` (``scheme://host:port``). ``direct`` (the worker on loopback) never
    goes through a proxy, whatever the environment says. ``spare``: idle connections the lean
    client keeps open ahead of need."""
    url = urlsplit(origin)
    plain = url.scheme == "http" and url.username is None  # credentials in the URL: httpx's Basic auth
    if transport is None and plain and (direct or not _proxied(origin)):
        return LeanHttpClient(
            origin,
            headers=headers,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
            spare=spare,
        )
    return HttpxEngineClient(
        httpx.AsyncClient(
            base_url=origin,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            trust_env=not direct,
        )
    )
