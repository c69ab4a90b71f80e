"""How the remote engine calls its upstream: one HTTP request with bounded retries, through the
replica's circuit breaker, its failures mapped to Alizé's typed errors.

* Retries happen only before the first byte of the reply: on connection failures and on
  429/500/502/503/504, after an exponential backoff, or after what the upstream's
  ``Retry-After`` asks (seconds or an HTTP date) when that is longer, up to
  :data:`MAX_RETRY_WAIT_S` (a longer wait is passed on to the client at once). A timeout is not
  retried: the upstream may still be working on the first attempt.
* The breaker (:mod:`alize.engines.breaker`) counts unreachable, timed-out and 5xx attempts;
  any other answer is the upstream answering and resets it.
* Errors name the upstream by host only, with the API key redacted from anything the upstream
  echoed: a 4xx is the client's request being refused (400 ``upstream_rejected``, or
  ``context_length_exceeded``), 429 stays 429, a 503 is 503 ``engine_unavailable``, other
  failures are 502 ``upstream_error``; wrong credentials or an unknown upstream model are the
  operator's to fix and say so. An error after retries says how many in its
  ``x-alize-retries`` header (:data:`RETRIES_HEADER`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from alize.engines.breaker import CircuitBreaker
from alize.engines.http_client import EngineHttpClient, EngineResponse
from alize.engines.remote_wire import retry_after_s, upstream_message
from alize.errors import (
    AlizeError,
    EngineUnavailableError,
    InvalidRequestError,
    RateLimitError,
    UpstreamError,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: the longest upstream ``Retry-After`` honoured between retries (longer ones are passed on)
MAX_RETRY_WAIT_S = 5.0
#: the response header that tells how many times the upstream call was retried
RETRIES_HEADER = "x-alize-retries"


def counted(error: AlizeError, retries: int) -> AlizeError:
    """``error``, saying in its headers how many retries came before it."""
    if retries:
        error.headers[RETRIES_HEADER] = str(retries)
    return error


class Upstream:
    """One replica's upstream as the remote engine calls it: where, with which key, how
    patiently, and its circuit breaker."""

    def __init__(
        self,
        *,
        host: str,
        model: str,
        key_env: str | None,
        max_retries: int,
        backoff_s: float,
        timeout_s: float,
        breaker: CircuitBreaker,
    ) -> None:
        self.host, self.model, self.key_env = host, model, key_env
        self.max_retries, self.backoff_s, self.timeout_s = max_retries, backoff_s, timeout_s
        self.breaker = breaker
        #: the API key once read (at start), redacted from every message
        self.key: str | None = None

    def redact(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text

    async def send(
        self,
        client: EngineHttpClient,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        read_body: bool,
    ) -> tuple[EngineResponse, int]:
        """One request with bounded retries, through the circuit breaker; returns the response
        and how many retries it took. A non-2xx answer raises the mapped error.

        With ``read_body=False`` the response is returned unread (streaming); the caller closes it."""
        attempt = 0
        breaker = self.breaker
        while True:
            wait = self.backoff_s * 2**attempt
            try:
                breaker.check()
            except AlizeError as exc:
                raise counted(exc, attempt) from None
            try:
                response = await client.send(method, path, json_body=body, stream=not read_body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                breaker.failure()
                if attempt < self.max_retries:
                    attempt += 1
                    await asyncio.sleep(wait)
                    continue
                raise counted(
                    EngineUnavailableError(
                        f"cannot reach the upstream {self.host} ({type(exc).__name__})", retry_after=5
                    ),
                    attempt,
                ) from None
            except httpx.TimeoutException:
                breaker.failure()
                raise counted(
                    UpstreamError(f"the upstream {self.host} did not answer within {self.timeout_s:g} s"),
                    attempt,
                ) from None
            except httpx.TransportError as exc:
                breaker.failure()
                raise counted(
                    UpstreamError(f"lost the connection to the upstream {self.host}: {type(exc).__name__}"),
                    attempt,
                ) from None
            status = response.status_code
            if status >= 500:
                breaker.failure()
            else:
                breaker.success()
            if status < 400:
                return response, attempt
            retry_after = retry_after_s(response, wait)
            await response.aread()
            await response.aclose()
            retryable = status in RETRY_STATUSES and retry_after <= MAX_RETRY_WAIT_S
            if retryable and attempt < self.max_retries:
                attempt += 1
                await asyncio.sleep(max(wait, retry_after))
                continue
            raise counted(self.error_from(response, path, retry_after), attempt)

    def error_from(self, response: EngineResponse, path: str, retry_after: float) -> AlizeError:
        """The typed error of an upstream's non-2xx answer (its body read)."""
        status = response.status_code
        message, code = upstream_message(response.content, status)
        message = self.redact(message)
        where = f"the upstream {self.host}"
        extra = {"upstream_status": status}
        if status in (401, 403):
            hint = f"check the key in {self.key_env}" if self.key_env else "the card names no api_key_env"
            error: AlizeError = UpstreamError(f"{where} refused the credentials (HTTP {status}); {hint}")
        elif status == 404:
            error = UpstreamError(f"{where} has no '{path}' for '{self.model}' (HTTP 404): {message}")
        elif status == 429:
            return RateLimitError(
                f"{where} is rate limiting requests: {message}",
                retry_after=max(1.0, retry_after),
                code="upstream_rate_limited",
            )
        elif status == 503:
            return EngineUnavailableError(
                f"{where} is unavailable: {message}", retry_after=max(1.0, retry_after)
            )
        elif 400 <= status < 500:
            context = code is not None and "context" in code
            error = InvalidRequestError(
                f"{where} rejected the request (HTTP {status}): {message}",
                code="context_length_exceeded" if context else "upstream_rejected",
            )
        else:
            error = UpstreamError(f"{where} failed (HTTP {status}): {message}")
        error.extra.update(extra)
        return error
