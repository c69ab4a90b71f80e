"""What the policy pipeline tells whoever watches it (metrics, traces, logs), and nothing else.

The pipeline calls an observer at four points of its straight path and never waits on it:

- :meth:`RequestObserver.refused`: a request stopped before admission with a typed error (rate
  limit, budget, queue full, input filter, engine down...), named by its error ``code``;
- :meth:`RequestObserver.started`: a request got its slots, after ``queue_s`` seconds of waiting,
  and ``cold_start_s`` of loading if it had to load the deployment;
- :meth:`RequestObserver.token_gap`: the time between two streamed events of one choice;
- :meth:`RequestObserver.settled`: the request's ledger row was written, with its timings.

An observer must be cheap and must not raise (the pipeline suppresses and logs anything it does
raise, so a broken exporter never breaks serving). The implementations live in
:mod:`alize.observability`; :class:`NullObserver` is the default so the pipeline needs none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from alize.gateway.metering import UsageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settled:
    """One settled request: its ledger row plus the timings in seconds (not rounded to ms)."""

    record: UsageRecord
    #: the label it is counted under: the deployment, or ``moderation`` for the classifier (whose
    #: model name is the client's and would make the label unbounded)
    deployment: str
    #: from the ticket (authorisation) to settling
    latency_s: float
    #: from the ticket to the first streamed token; ``None`` when none came
    ttft_s: float | None = None
    #: ``input`` when the input filter refused it before any model ran
    filtered_at: str | None = None


class RequestObserver(Protocol):
    def refused(self, deployment: str, project: str, code: str) -> None:
        """A request refused before admission (no ledger row), by error code."""

    def started(self, deployment: str, project: str, *, queue_s: float, cold_start_s: float | None) -> None:
        """A request took its slots: ``queue_s`` waiting for them, ``cold_start_s`` loading."""

    def token_gap(self, deployment: str, seconds: float) -> None:
        """Seconds between two consecutive streamed events of one choice (inter-token latency)."""

    def settled(self, outcome: Settled) -> None:
        """The request's one ledger row was written."""


class NullObserver:
    """Observes nothing: a pipeline built without observability (tests, tools)."""

    def refused(self, deployment: str, project: str, code: str) -> None:
        return None

    def started(self, deployment: str, project: str, *, queue_s: float, cold_start_s: float | None) -> None:
        return None

    def token_gap(self, deployment: str, seconds: float) -> None:
        return None

    def settled(self, outcome: Settled) -> None:
        return None


class Guarded:
    """An observer whose failures are logged, never raised into the request path."""

    def __init__(self, inner: RequestObserver) -> None:
        self._inner = inner

    def refused(self, deployment: str, project: str, code: str) -> None:
        try:
            self._inner.refused(deployment, project, code)
        except Exception:
            log.exception("observer failed on a refusal")

    def started(self, deployment: str, project: str, *, queue_s: float, cold_start_s: float | None) -> None:
        try:
            self._inner.started(deployment, project, queue_s=queue_s, cold_start_s=cold_start_s)
        except Exception:
            log.exception("observer failed on a start")

    def token_gap(self, deployment: str, seconds: float) -> None:
        try:
            self._inner.token_gap(deployment, seconds)
        except Exception:
            log.exception("observer failed on a token")

    def settled(self, outcome: Settled) -> None:
        try:
            self._inner.settled(outcome)
        except Exception:
            log.exception("observer failed on a settled request")
