"""Deployment fallbacks: when a deployment cannot serve a request, the next one in its
``fallbacks`` list does, under the same request id, so the request leaves one ledger row and
is billed once.

A deployment falls back for three reasons (:func:`reason_for`), and only before the reply's
first token (once text has reached the client, a failure ends the stream with an error event):

* ``down``: its engine cannot serve (503 ``engine_unavailable`` or ``circuit_open``, a remote
  upstream's 502 ``upstream_error`` after its retries, an engine error);
* ``overloaded``: its fair queue is full (503 ``queue_full``) or its upstream rate limits
  (429 ``upstream_rate_limited``);
* ``context``: the prompt and the asked ``max_tokens`` do not fit its context
  (400 ``context_length_exceeded``): a deployment with a longer context is tried.

A client's own mistakes (any other 400), its rate limits and budget (checked once, before any
deployment is tried) never fall back. The list is the deployment's own, tried in order, each
once; a fallback's own fallbacks are not followed (no chains to reason about, no cycles).
Names that do not exist (any more) are skipped. :class:`Route` records what happened: the
deployment that served, each deployment left and why, and the upstream retries on the way;
its :meth:`Route.headers` go back to the client and its fields onto the ledger row.

Generation and embeddings fall back the same way: :func:`first_ready` prepares a request on the
first deployment of a chain that can take it, and :func:`leave_or_raise` decides, after a failure
once prepared (a full queue, an engine failure before any output), whether the next one may try.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

from alize.engines.remote_http import RETRIES_HEADER
from alize.errors import (
    AlizeError,
    ContextLengthExceededError,
    EngineError,
    EngineUnavailableError,
    QueueFullError,
    RateLimitError,
)

_D = TypeVar("_D")
_P = TypeVar("_P")


class Named(Protocol):
    @property
    def name(self) -> str: ...


_N = TypeVar("_N", bound=Named)


class FallbackReason(StrEnum):
    DOWN = "down"
    OVERLOADED = "overloaded"
    CONTEXT = "context"


def reason_for(exc: BaseException) -> FallbackReason | None:
    """Why ``exc`` lets a request fall back to the next deployment, or ``None`` if it must not."""
    if isinstance(exc, ContextLengthExceededError):
        return FallbackReason.CONTEXT
    if isinstance(exc, QueueFullError):
        return FallbackReason.OVERLOADED
    if isinstance(exc, RateLimitError):
        return FallbackReason.OVERLOADED if exc.code == "upstream_rate_limited" else None
    if isinstance(exc, EngineUnavailableError | EngineError):
        return FallbackReason.DOWN
    return None


def retries_of(exc: BaseException) -> int:
    """The upstream retries an error came after (the remote engine's header), else 0."""
    if not isinstance(exc, AlizeError):
        return 0
    value = exc.headers.get(RETRIES_HEADER, "0")
    return int(value) if value.isdigit() else 0


def fallback_chain(name: str, fallbacks: Sequence[str], find: Callable[[str], _D | None]) -> list[_D]:
    """The deployments ``name`` falls back to, in order: each named once, never itself, only
    those that exist now."""
    seen = {name}
    chain: list[_D] = []
    for other in fallbacks:
        if other in seen:
            continue
        seen.add(other)
        found = find(other)
        if found is not None:
            chain.append(found)
    return chain


@dataclass(frozen=True, slots=True)
class Fallback:
    """One deployment a request left: its name, why, and the error code it gave."""

    deployment: str
    reason: FallbackReason
    code: str


@dataclass(slots=True)
class Route:
    """How one request was served (mutable: filled in as the request goes)."""

    #: the deployment whose engine produced the reply (``None`` until one started it)
    served_by: str | None = None
    fallbacks: list[Fallback] = field(default_factory=list)
    #: upstream calls retried, over every deployment tried
    retries: int = 0

    def left(self, deployment: str, exc: BaseException, reason: FallbackReason) -> None:
        code = exc.code if isinstance(exc, AlizeError) and exc.code else type(exc).__name__
        self.fallbacks.append(Fallback(deployment, reason, code))
        self.retries += retries_of(exc)

    def headers(self) -> dict[str, str]:
        """``x-alize-retries`` and ``x-alize-fallback`` (``A;reason=down;code=…``, one entry per
        deployment left, comma-separated), only when there was a retry or a fallback."""
        out: dict[str, str] = {}
        if self.retries:
            out[RETRIES_HEADER] = str(self.retries)
        if self.fallbacks:
            out["x-alize-fallback"] = ", ".join(
                f"{f.deployment};reason={f.reason};code={f.code}" for f in self.fallbacks
            )
        return out


def tell(exc: BaseException, route: Route) -> None:
    """A request that fails after retries or fallbacks says so in its error's headers."""
    if isinstance(exc, AlizeError):
        exc.headers.update(route.headers())


async def first_ready(
    candidates: Sequence[_N], prepare: Callable[[_N], Awaitable[_P]], route: Route
) -> tuple[_P, list[_N]]:
    """``prepare`` on each candidate deployment in turn until one succeeds: its result, and the
    candidates after it (where the request may still fall back). A failure that allows a
    fallback (:func:`reason_for`) is recorded on ``route`` and the next candidate tried; the
    last one's failure, or one that must not fall back, is raised with the route's headers."""
    for i, candidate in enumerate(candidates):
        try:
            prepared = await prepare(candidate)
        except Exception as exc:
            reason = reason_for(exc)
            if reason is None or i == len(candidates) - 1:
                tell(exc, route)
                raise
            route.left(candidate.name, exc, reason)
            continue
        return prepared, list(candidates[i + 1 :])
    raise AssertionError("a deployment has at least itself to try")  # pragma: no cover


def leave_or_raise(route: Route, deployment: str, exc: Exception, *, remaining: int) -> None:
    """After ``exc`` on a prepared request: record that it leaves ``deployment`` for the next of
    ``remaining`` fallbacks, or raise ``exc`` (with the route's headers) when it must not fall
    back or none is left."""
    reason = reason_for(exc)
    if reason is None or remaining == 0:
        tell(exc, route)
        raise exc
    route.left(deployment, exc, reason)
