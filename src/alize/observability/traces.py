"""Optional OpenTelemetry traces, one span per settled request, in the GenAI semantic conventions.

Off unless an OTLP endpoint is configured (``ALIZE_OBSERVABILITY__OTLP_ENDPOINT``), and the SDK
is an optional extra (``pip install alize[otel]``): a platform that does not trace pays nothing.
The span is written when the request settles, with its real start and end times (the ticket's
start to the ledger row), so the request path never carries a span object:
``gen_ai.operation.name`` (``chat``; ``moderation`` for the classifier), ``gen_ai.request.model``
(the deployment called), ``gen_ai.response.model`` (the catalog model that answered),
``gen_ai.response.id``, ``gen_ai.usage.input_tokens`` and ``gen_ai.usage.output_tokens``, plus
``alize.project``, ``alize.status`` and ``alize.cost_micros``. No prompt or completion text.
"""

from __future__ import annotations

import time
from typing import Any

from alize.gateway.observer import Settled

SERVICE_NAME = "alize"


def span_attributes(outcome: Settled) -> dict[str, str | int | float]:
    """The span's attributes: GenAI semantic conventions first, Alizé's own after."""
    r = outcome.record
    attributes: dict[str, str | int | float] = {
        "gen_ai.operation.name": "moderation" if outcome.deployment == "moderation" else "chat",
        "gen_ai.request.model": outcome.deployment,
        "gen_ai.response.model": r.model,
        "gen_ai.response.id": r.request_id,
        "gen_ai.usage.input_tokens": r.prompt_tokens,
        "gen_ai.usage.output_tokens": r.completion_tokens,
        "alize.project": r.project_id,
        "alize.status": str(r.status),
        "alize.cost_micros": r.cost_micros,
    }
    if r.error_code is not None:
        attributes["error.type"] = r.error_code
    if outcome.ttft_s is not None:
        attributes["alize.time_to_first_token_s"] = round(outcome.ttft_s, 6)
    return attributes


class Tracer:
    """Writes each settled request as a span through an OpenTelemetry tracer provider."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("alize.gateway")

    @classmethod
    def otlp(cls, endpoint: str) -> Tracer:
        """A batching OTLP/HTTP exporter to ``endpoint`` (e.g. ``http://127.0.0.1:4318/v1/traces``)."""
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise RuntimeError("traces need the OpenTelemetry SDK: pip install 'alize[otel]'") from exc
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        return cls(provider)

    def refused(self, deployment: str, project: str, code: str) -> None:
        return None

    def started(self, deployment: str, project: str, *, queue_s: float, cold_start_s: float | None) -> None:
        return None

    def token_gap(self, deployment: str, seconds: float) -> None:
        return None

    def settled(self, outcome: Settled) -> None:
        end = time.time_ns()
        start = end - int(outcome.latency_s * 1e9)
        name = f"{span_attributes(outcome)['gen_ai.operation.name']} {outcome.deployment}"
        span = self._tracer.start_span(name, start_time=start, attributes=span_attributes(outcome))
        if outcome.record.status == "error":
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, outcome.record.error_code or "error"))
        span.end(end_time=end)

    def shutdown(self) -> None:
        """Flush what is batched (at server shutdown)."""
        self._provider.shutdown()
