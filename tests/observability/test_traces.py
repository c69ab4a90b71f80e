"""OpenTelemetry spans in the GenAI semantic conventions, one per settled request."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from alize.gateway.metering import UsageRecord
from alize.gateway.observer import Settled
from alize.observability.traces import Tracer


def record(status: str = "success", code: str | None = None) -> UsageRecord:
    return UsageRecord(
        request_id="req_1",
        project_id="prj_a",
        key_id="key_secret_id",
        deployment="smol",
        model="smollm2-135m-instruct",
        status=status,
        prompt_tokens=12,
        completion_tokens=5,
        cost_micros=34,
        error_code=code,
    )


def spans(*outcomes: Settled) -> list[object]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = Tracer(provider)
    for outcome in outcomes:
        tracer.settled(outcome)
    tracer.shutdown()
    return list(exporter.get_finished_spans())


def test_a_settled_request_is_one_span_with_genai_attributes() -> None:
    (span,) = spans(Settled(record(), "smol", latency_s=0.5, ttft_s=0.1))
    attrs = dict(span.attributes)  # type: ignore[attr-defined]
    assert span.name == "chat smol"  # type: ignore[attr-defined]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "smol"
    assert attrs["gen_ai.response.model"] == "smollm2-135m-instruct"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["alize.project"] == "prj_a"
    assert "key_secret_id" not in str(attrs)  # who called is not traced
    duration = (span.end_time - span.start_time) / 1e9  # type: ignore[attr-defined]
    assert abs(duration - 0.5) < 0.01


def test_an_error_span_carries_its_code() -> None:
    (span,) = spans(Settled(record("error", "queue_full"), "smol", latency_s=0.01))
    assert dict(span.attributes)["error.type"] == "queue_full"  # type: ignore[attr-defined]
    assert span.status.status_code.name == "ERROR"  # type: ignore[attr-defined]
