"""``/metrics`` after known traffic on scripted engines: each family moves by exactly what the
requests did, refusals are counted by code, and the route's access rules hold."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.observability.promtext import value
from tests.support.apps import scripted_app

from alize.config import DeploymentSettings, LimitSettings, ObservabilitySettings, Settings

ADMIN = "metrics-admin-key-0123456789abcdef"


def settings(tmp_path: Path, *, parallel: int = 2, **overrides: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        default_model="echo",
        load_on_start=False,
        deployments=[
            DeploymentSettings(
                name=s, engine="scripted", model_path=Path(s), parallel=parallel, ctx_per_slot=256
            )
            for s in ("echo", "error-mid-stream", "slow")
        ],
        limits=LimitSettings(queue_max=0),
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with scripted_app(settings(tmp_path)) as c:
        yield c


def chat(client: TestClient, text: str, *, model: str = "echo", stream: bool = False) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    r = client.post("/v1/chat/completions", json=body)
    return r.status_code


def test_counters_and_histograms_move_by_the_traffic(client: TestClient) -> None:
    before = client.get("/metrics").text
    assert value(before, "alize_requests_total") == 0
    assert chat(client, "one two three four") == 200
    assert chat(client, "five six seven", stream=True) == 200
    text = client.get("/metrics").text
    echo = {"deployment": "echo"}
    assert value(text, "alize_requests_total", status="success", **echo) == 2
    assert value(text, "alize_generation_tokens_total", **echo) == 4 + 3
    # the scripted engine counts the JSON list of message contents, word by word
    assert value(text, "alize_prompt_tokens_total", **echo) == 4 + 3
    assert value(text, "alize_time_to_first_token_seconds_count", **echo) == 2
    assert value(text, "alize_e2e_request_latency_seconds_count", **echo) == 2
    assert value(text, "alize_request_queue_time_seconds_count", **echo) == 2
    assert value(text, "alize_request_time_per_output_token_seconds_count", **echo) == 2
    # one gap between each pair of consecutive tokens of a choice: 3 + 2
    assert value(text, "alize_inter_token_latency_seconds_count", **echo) == 5
    assert value(text, "alize_cold_starts_total", **echo) == 1  # the first request loaded it
    assert value(text, "alize_cold_start_duration_seconds_count", **echo) == 1
    assert value(text, "alize_deployment_loaded", **echo) == 1
    assert value(text, "alize_deployment_loaded", deployment="error-mid-stream") == 0
    assert value(text, "alize_slots_total", **echo) == 2
    assert value(text, "alize_num_requests_running", **echo) == 0
    route = {"route": "/v1/chat/completions", "method": "POST"}
    assert value(text, "alize_http_requests_total", status="200", **route) == 2
    assert value(text, "alize_http_requests_total", route="/metrics", status="200") == 1
    # the scrape itself was counted once it ended
    again = client.get("/metrics").text
    assert value(again, "alize_http_requests_total", route="/metrics", status="200") == 2


def test_errors_refusals_and_unknown_paths_are_counted_by_bounded_labels(client: TestClient) -> None:
    assert chat(client, "a b c d", model="error-mid-stream") == 500  # fails after two tokens
    assert chat(client, "hi", model="no-such-model") == 404
    assert client.get("/some/random/path/123").status_code == 404
    text = client.get("/metrics").text
    assert value(text, "alize_requests_total", deployment="error-mid-stream", status="error") == 1
    assert value(text, "alize_generation_tokens_total", deployment="error-mid-stream") == 2
    assert value(text, "alize_http_requests_total", route="other", status="404") == 1
    assert "no-such-model" not in text and "random" not in text


def test_a_full_queue_is_a_refusal_by_code(tmp_path: Path) -> None:
    # queue_max=0 and one slot: a second concurrent request is refused with queue_full
    with scripted_app(settings(tmp_path, parallel=1)) as client:
        results: list[int] = []
        body = {"model": "slow", "messages": [{"role": "user", "content": "x " * 60}], "stream": True}

        def slow_stream() -> None:
            with client.stream("POST", "/v1/chat/completions", json=body) as r:
                results.append(r.status_code)
                started.set()
                release.wait(10)
                for _ in r.iter_lines():
                    pass

        started, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=slow_stream)
        holder.start()
        assert started.wait(10)
        refused = client.post("/v1/chat/completions", json={**body, "stream": False})
        release.set()
        holder.join(10)
        assert refused.status_code == 503, refused.text
        text = client.get("/metrics").text
        assert value(text, "alize_requests_refused_total", deployment="slow", code="queue_full") == 1
        assert value(text, "alize_requests_total", deployment="slow", status="error") == 1
        assert value(text, "alize_requests_total", deployment="slow", status="success") == 1


def test_metrics_need_an_admin_key_once_keys_exist(tmp_path: Path) -> None:
    with scripted_app(settings(tmp_path, admin_key=ADMIN)) as client:
        assert client.get("/metrics").status_code == 401
        r = client.post("/admin/api/keys", json={"name": "app"}, headers={"Authorization": f"Bearer {ADMIN}"})
        inference = r.json()["key"]
        assert client.get("/metrics", headers={"Authorization": f"Bearer {inference}"}).status_code == 403
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")


def test_metrics_can_be_public_or_off(tmp_path: Path) -> None:
    public = settings(tmp_path, admin_key=ADMIN, observability=ObservabilitySettings(metrics_public=True))
    with scripted_app(public) as client:
        assert client.get("/metrics").status_code == 200
    off = settings(tmp_path / "off", observability=ObservabilitySettings(metrics_enabled=False))
    with scripted_app(off) as client:
        assert client.get("/metrics").status_code == 404


def test_rate_limited_and_budget_refused_requests_are_counted_by_code(tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    base = settings(tmp_path, admin_key=ADMIN)
    # echo at one unit per token: any request costs more than a budget of one micro-unit
    prices = {"price_input_per_million": 1_000_000, "price_output_per_million": 1_000_000}
    priced = base.model_copy(update={"deployments": [d.model_copy(update=prices) for d in base.deployments]})
    with scripted_app(priced) as client:
        # a key allowed one request a minute: the second is refused before any engine work
        limited = client.post("/admin/api/keys", json={"name": "ratekey", "rpm": 1}, headers=admin).json()
        body = {"model": "echo", "messages": [{"role": "user", "content": "a b"}]}
        auth = {"Authorization": f"Bearer {limited['key']}"}
        assert client.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
        assert client.post("/v1/chat/completions", json=body, headers=auth).status_code == 429
        # a project with a budget of one micro-unit
        project = client.post(
            "/admin/api/projects", json={"name": "poor", "monthly_budget_micros": 1}, headers=admin
        ).json()
        poor = client.post("/admin/api/keys", json={"name": "p", "project_id": project["id"]}, headers=admin)
        refused = client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {poor.json()['key']}"}
        )
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
        text = client.get("/metrics", headers=admin).text
    refusals = {"deployment": "echo", "project": limited["project_id"]}
    assert value(text, "alize_requests_refused_total", code="rate_limit_exceeded", **refusals) == 1
    assert value(text, "alize_requests_refused_total", code="insufficient_quota", project=project["id"]) == 1
    # refused before admission: no ledger row, so no settled request for them
    assert value(text, "alize_requests_total", deployment="echo") == 1
    assert limited["key"] not in text and "ratekey" not in text  # keys are never labels


def test_moderation_calls_count_under_one_label_and_their_refusals_too(tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with scripted_app(settings(tmp_path, admin_key=ADMIN)) as client:
        key = client.post("/admin/api/keys", json={"name": "mod", "rpm": 1}, headers=admin).json()
        auth = {"Authorization": f"Bearer {key['key']}"}
        body = {"model": "omni-moderation-client-chosen-name", "input": "hello there"}
        assert client.post("/v1/moderations", json=body, headers=auth).status_code == 200
        assert client.post("/v1/moderations", json=body, headers=auth).status_code == 429
        text = client.get("/metrics", headers=admin).text
    assert value(text, "alize_requests_total", deployment="moderation", status="success") == 1
    assert (
        value(text, "alize_requests_refused_total", deployment="moderation", code="rate_limit_exceeded") == 1
    )
    assert "client-chosen" not in text  # the client's model name never becomes a label


def test_the_request_path_feeds_the_families_own_children() -> None:
    """The children the request path remembers are the ones the exposition reads: one per set of
    label values, each the family's own."""
    from prometheus_client import generate_latest

    from alize.observability.metrics import Metrics

    metrics = Metrics()
    for status in (200, 200, 404):
        metrics.http("/v1/chat/completions", "POST", status, 0.01)
    metrics.http("/v1/models", "GET", 200, 0.01)
    text = generate_latest(metrics.registry).decode()
    chat = {"route": "/v1/chat/completions", "method": "POST"}
    assert value(text, "alize_http_requests_total", **chat, status="200") == 2
    assert value(text, "alize_http_requests_total", **chat, status="404") == 1
    assert value(text, "alize_http_requests_total", route="/v1/models", method="GET", status="200") == 1
    assert metrics.http_requests.labels("/v1/models", "GET", "200")._value.get() == 1
