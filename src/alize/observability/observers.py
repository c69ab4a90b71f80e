"""Builds what watches the gateway: metrics always, the request log always, traces when an OTLP
endpoint is configured, fanned out behind one observer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alize.config import ObservabilitySettings
from alize.deployments.manager import DeploymentManager
from alize.gateway.observer import RequestObserver, Settled
from alize.observability.logs import SettledLog
from alize.observability.metrics import Metrics
from alize.observability.traces import Tracer


class FanOut:
    """Tells every observer, in order."""

    def __init__(self, observers: Sequence[RequestObserver]) -> None:
        self._observers = tuple(observers)

    def refused(self, deployment: str, project: str, code: str) -> None:
        for o in self._observers:
            o.refused(deployment, project, code)

    def started(self, deployment: str, project: str, *, queue_s: float, cold_start_s: float | None) -> None:
        for o in self._observers:
            o.started(deployment, project, queue_s=queue_s, cold_start_s=cold_start_s)

    def token_gap(self, deployment: str, seconds: float) -> None:
        for o in self._observers:
            o.token_gap(deployment, seconds)

    def settled(self, outcome: Settled) -> None:
        for o in self._observers:
            o.settled(outcome)


@dataclass
class Observability:
    metrics: Metrics
    tracer: Tracer | None
    observer: RequestObserver

    def close(self) -> None:
        if self.tracer is not None:
            self.tracer.shutdown()


def build_observability(settings: ObservabilitySettings, deployments: DeploymentManager) -> Observability:
    metrics = Metrics(deployments)
    observers: list[RequestObserver] = [metrics, SettledLog()]
    tracer = Tracer.otlp(settings.otlp_endpoint) if settings.otlp_endpoint else None
    if tracer is not None:
        observers.append(tracer)
    return Observability(metrics, tracer, FanOut(observers))
