"""The platform's Prometheus metrics, named in the manner of vLLM's ``vllm:*`` families.

Labels have bounded cardinality: ``deployment`` (the operator creates them; moderation calls all
count as ``moderation``), ``project`` (also created by operators), a request ``status`` from
:class:`~alize.gateway.metering.UsageStatus` and an error ``code`` from the error tree. A key or a
user is never a label: a label per key would grow without bound and name who called.

Counters and histograms are fed by the gateway's observer points (:class:`Metrics` implements
:class:`~alize.gateway.observer.RequestObserver`); gauges (loaded, running, waiting, slots) are
read from the deployment manager when scraped, so they can never drift from the truth. Each app
has its own :class:`~prometheus_client.CollectorRegistry` (no process-wide default registry), so
several apps in one test process do not share counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from alize.deployments.manager import DeploymentManager
from alize.gateway.observer import Settled

#: seconds; the buckets vLLM uses for time to first token, down to what a small CPU model does
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
)
ITL_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
)
REQUEST_BUCKETS = (
    0.1,
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
)
LOAD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)

_D = ("deployment",)
_DP = ("deployment", "project")

F = TypeVar("F", bound=MetricWrapperBase)


class _Labelled(Generic[F]):
    """A family's children by label values, each looked up in the family once: ``labels()``
    checks its arguments and takes the family's lock on every call, and a chat request makes
    about ten such calls (profiled: 3% of the gateway's CPU on a request, with the per-token
    gaps). No child is ever removed, so a remembered one stays the family's own."""

    __slots__ = ("_children", "_family")

    def __init__(self, family: F) -> None:
        self._family = family
        self._children: dict[tuple[str, ...], F] = {}

    def __call__(self, *values: str) -> F:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._family.labels(*values)
        return child


class Metrics:
    """The counters and histograms, and the observer that feeds them."""

    def __init__(self, deployments: DeploymentManager | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "alize_requests",
            "Settled requests (one ledger row each), by outcome.",
            (*_DP, "status"),
            registry=r,
        )
        self.refusals = Counter(
            "alize_requests_refused",
            "Requests that failed before any output, by error code (rate_limit_exceeded, "
            "insufficient_quota, queue_full, engine errors...).",
            (*_DP, "code"),
            registry=r,
        )
        self.content_filtered = Counter(
            "alize_content_filtered",
            "Requests a content filter stopped, by where (input: before any model ran; output).",
            (*_DP, "stage"),
            registry=r,
        )
        self.prompt_tokens = Counter("alize_prompt_tokens", "Prompt tokens metered.", _DP, registry=r)
        self.cached_tokens = Counter(
            "alize_prompt_tokens_cached",
            "Prompt tokens served from the engine's prompt cache.",
            _DP,
            registry=r,
        )
        self.generation_tokens = Counter(
            "alize_generation_tokens", "Completion tokens metered.", _DP, registry=r
        )
        self.spend = Counter(
            "alize_spend_micros", "Cost charged, in micro-units of the price currency.", _DP, registry=r
        )
        self.ttft = Histogram(
            "alize_time_to_first_token_seconds",
            "From authorisation to the first streamed token.",
            _D,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "alize_inter_token_latency_seconds",
            "Between two consecutive streamed events of one choice.",
            _D,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "alize_request_time_per_output_token_seconds",
            "Per request: (end - first token) / (completion tokens - 1).",
            _D,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "alize_e2e_request_latency_seconds",
            "From authorisation to the ledger row, for settled requests.",
            _D,
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "alize_request_queue_time_seconds",
            "Waiting for slots in the deployment's fair queue.",
            _D,
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.cold_starts = Counter(
            "alize_cold_starts", "Deployment loads a request had to wait for.", _D, registry=r
        )
        self.cold_start = Histogram(
            "alize_cold_start_duration_seconds",
            "How long those loads took.",
            _D,
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "alize_http_requests",
            "HTTP requests by route template (never the raw path), method and status.",
            ("route", "method", "status"),
            registry=r,
        )
        self.http_duration = Histogram(
            "alize_http_request_duration_seconds",
            "HTTP requests from the first byte in to the last byte out (streams included).",
            ("route", "method"),
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        if deployments is not None:
            r.register(DeploymentCollector(deployments))
        # the children the request path feeds, found once (see _Labelled)
        self._requests = _Labelled(self.requests)
        self._content_filtered = _Labelled(self.content_filtered)
        self._prompt_tokens = _Labelled(self.prompt_tokens)
        self._cached_tokens = _Labelled(self.cached_tokens)
        self._generation_tokens = _Labelled(self.generation_tokens)
        self._spend = _Labelled(self.spend)
        self._ttft = _Labelled(self.ttft)
        self._itl = _Labelled(self.itl)
        self._tpot = _Labelled(self.tpot)
        self._e2e = _Labelled(self.e2e)
        self._queue = _Labelled(self.queue)
        self._http_requests = _Labelled(self.http_requests)
        self._http_duration = _Labelled(self.http_duration)

    # ------------------------------------------------------------------ the observer

    def refused(self, deployment: str, project: str, code: str) -> None:
        self.refusals.labels(deployment, project, code).inc()

    def started(self, deployment: str, project: str, *, queue_s: float, cold_start_s: float | None) -> None:
        self._queue(deployment).observe(max(0.0, queue_s))
        if cold_start_s is not None:
            self.cold_starts.labels(deployment).inc()
            self.cold_start.labels(deployment).observe(cold_start_s)

    def token_gap(self, deployment: str, seconds: float) -> None:
        self._itl(deployment).observe(max(0.0, seconds))

    def settled(self, outcome: Settled) -> None:
        record, name = outcome.record, outcome.deployment
        labels = (name, record.project_id)
        self._requests(*labels, str(record.status)).inc()
        if record.status == "content_filtered":
            self._content_filtered(*labels, outcome.filtered_at or "output").inc()
        if outcome.filtered_at is not None:
            return  # refused before any model ran: no tokens, no latency worth a histogram
        self._prompt_tokens(*labels).inc(record.prompt_tokens)
        self._cached_tokens(*labels).inc(record.cached_tokens)
        self._generation_tokens(*labels).inc(record.completion_tokens)
        self._spend(*labels).inc(record.cost_micros)
        self._e2e(name).observe(max(0.0, outcome.latency_s))
        if outcome.ttft_s is not None:
            self._ttft(name).observe(max(0.0, outcome.ttft_s))
            if record.completion_tokens > 1:
                per_token = (outcome.latency_s - outcome.ttft_s) / (record.completion_tokens - 1)
                self._tpot(name).observe(max(0.0, per_token))

    def http(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP request (the HTTP layer calls this with the matched route's template)."""
        self._http_requests(route, method, str(status)).inc()
        self._http_duration(route, method).observe(max(0.0, seconds))

    # ------------------------------------------------------------------ exposition

    def render(self, extra: Iterable[Metric] = ()) -> bytes:
        """The text exposition of every family, plus ``extra`` ones (the workers')."""
        text = generate_latest(self.registry)
        families = list(extra)
        if families:
            text += generate_latest(_Fixed(families))
        return text


class DeploymentCollector(Collector):
    """Gauges read from the deployment manager at each scrape."""

    def __init__(self, deployments: DeploymentManager) -> None:
        self._deployments = deployments

    def collect(self) -> Iterator[Metric]:
        loaded = GaugeMetricFamily(
            "alize_deployment_loaded", "1 while the deployment's engines are loaded.", labels=_D
        )
        running = GaugeMetricFamily(
            "alize_num_requests_running", "Sequences holding a slot (busy slots).", labels=_D
        )
        waiting = GaugeMetricFamily("alize_num_requests_waiting", "Requests waiting for a slot.", labels=_D)
        slots = GaugeMetricFamily("alize_slots_total", "Slots the deployment admits at once.", labels=_D)
        replicas = GaugeMetricFamily("alize_replicas", "Engine instances of the deployment.", labels=_D)
        for d in self._deployments.list():
            loaded.add_metric([d.name], 1.0 if d.loaded else 0.0)
            running.add_metric([d.name], d.queue.busy)
            waiting.add_metric([d.name], d.queue.waiting)
            slots.add_metric([d.name], d.queue.slots)
            replicas.add_metric([d.name], d.spec.replicas)
        yield from (loaded, running, waiting, slots, replicas)


class _Fixed(Collector):
    """Already collected families, for one exposition."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families
