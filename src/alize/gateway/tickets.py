"""What one request carries down the policy pipeline (:mod:`alize.gateway.pipeline`): its
:class:`Ticket` from authorisation to settling, the batch line it may be, and the ledger row it
leaves (:func:`usage_record`). Plain data and pure functions; the pipeline holds the behaviour.

A batch line (:class:`BatchLine`) goes down the same path as any request with three
differences: its request id is the line's own (stable, so the ledger's unique key makes it
idempotent), it waits in the deployment's ``batch`` lane (only slots interactive traffic leaves
free), and it pays the deployment's batch prices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from alize.deployments.admission import Lane
from alize.deployments.fallbacks import Route
from alize.deployments.manager import Deployment
from alize.deployments.specs import DeploymentSpec, Prices
from alize.domain import Usage
from alize.gateway.budget import Reservation
from alize.gateway.limits import Lease
from alize.gateway.metering import UsageRecord, UsageStatus

_S = TypeVar("_S")


@dataclass(frozen=True, slots=True)
class Moderated(Generic[_S]):
    """A moderation result with its ledger row's request id and the headers to send back."""

    result: _S
    request_id: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class BatchLine:
    """Marks a call as one line of a batch job."""

    #: the line's stable request id (its ledger row's key)
    request_id: str


def lane_of(line: BatchLine | None) -> Lane:
    return "batch" if line is not None else "interactive"


def line_request_id(line: BatchLine | None) -> str | None:
    return line.request_id if line is not None else None


@dataclass
class Ticket:
    """What one request holds from authorisation to settling."""

    project_id: str
    key_id: str | None
    #: what serves it; ``None`` for a moderation call (the classifier, not a deployment)
    deployment: Deployment | None
    #: the deployment's settings when the request arrived (prices, filters, model id)
    spec: DeploymentSpec | None
    started: float
    #: the name the request is metered under (the deployment, or the moderation model)
    name: str = ""
    model_id: str = ""
    prices: Prices = field(default_factory=Prices)
    #: the chat user of a chat-page reply (the ledger row names them; pseudonymised on erasure)
    user_id: str | None = None
    #: set once admitted: from then on the request is settled exactly once
    request_id: str | None = None
    lease: Lease | None = None
    reservation: Reservation | None = None
    settled: bool = False
    #: who served it, the fallbacks and retries on the way (a generation's, once prepared)
    route: Route | None = None


def usage_record(
    ticket: Ticket,
    request_id: str,
    status: UsageStatus,
    code: str | None,
    usage: Usage,
    cost: int,
    ended: float,
    first: float | None,
) -> UsageRecord:
    """The ledger row of a request, with latency and time to first token from its ticket."""
    return UsageRecord(
        request_id=request_id,
        project_id=ticket.project_id,
        key_id=ticket.key_id,
        deployment=ticket.name,
        model=ticket.model_id,
        status=status,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cost_micros=cost,
        error_code=code,
        latency_ms=max(0, int((ended - ticket.started) * 1000)),
        ttft_ms=max(0, int((first - ticket.started) * 1000)) if first is not None else None,
        user_id=ticket.user_id,
        **_route_fields(ticket.route),
    )


def _route_fields(route: Route | None) -> dict[str, Any]:
    if route is None:
        return {}
    return {
        "served_by": route.served_by,
        "fallback": route.headers().get("x-alize-fallback"),
        "retries": route.retries,
    }


def label(ticket: Ticket) -> str:
    """The deployment a request is counted under; every moderation call under one name, since its
    model name comes from the client."""
    return ticket.name if ticket.deployment is not None else "moderation"


def served(ticket: Ticket) -> Deployment:
    """The deployment of a generation or embedding ticket (every ticket but a moderation's)."""
    assert ticket.deployment is not None
    return ticket.deployment
