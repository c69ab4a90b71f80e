"""Retries, the circuit breaker and deployment fallbacks against real upstream processes: a live
``alize serve`` fronts two real HTTP servers on loopback (tests/e2e/flaky_upstream.py), one made
to fail with 500s, 429s, a hang, garbage and a kill, the other healthy. Deployment ``a`` (on the
flaky one) falls back to ``b`` (the healthy one); ``a-solo`` (the flaky one, no fallback) shows
what a client sees without one. Every request leaves exactly one ledger row, billed once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.server import LiveServer, admin, free_port, live_server
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

UPSTREAM = Path(__file__).with_name("flaky_upstream.py")
PRICE_IN, PRICE_OUT = 1_000_000, 3_000_000
BODY = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}


@dataclass
class Upstream:
    url: str
    process: subprocess.Popen[bytes]

    def control(self, mode: str | None = None, script: list[str] | None = None) -> int:
        body: dict[str, Any] = {"script": script or []}
        if mode is not None:
            body["mode"] = mode
        calls: int = httpx.post(self.url + "/control", json=body, timeout=5).json()["calls"]
        return calls

    def calls(self) -> int:
        calls: int = httpx.post(self.url + "/control", timeout=5).json()["calls"]
        return calls


def _start_upstream(name: str) -> Upstream:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(UPSTREAM), str(port), name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url + "/v1/models", timeout=1)
            return Upstream(url, process)
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"the upstream {name} did not start") from None
            time.sleep(0.1)


def _stop(upstream: Upstream) -> None:
    if upstream.process.poll() is None:
        os.killpg(upstream.process.pid, signal.SIGKILL)
        upstream.process.wait(5)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    flaky, healthy = _start_upstream("U1"), _start_upstream("U2")
    try:
        yield flaky, healthy
    finally:
        _stop(flaky)
        _stop(healthy)


def _card(model_id: str, upstream: Upstream) -> dict[str, Any]:
    return {
        "id": model_id,
        "display_name": model_id,
        "publisher": "tests",
        "license": "apache-2.0",
        "open_weights": False,
        "tasks": ["chat"],
        "context_length": 4096,
        "has_chat_template": True,
        "price_input_per_million": PRICE_IN,
        "price_output_per_million": PRICE_OUT,
        "source": {
            "kind": "remote",
            "base_url": upstream.url + "/v1",
            "upstream_model": "flaky",
            "max_retries": 1,
            "timeout_s": 2,
            "breaker_failures": 4,
            "breaker_cooldown_s": 2,
        },
    }


@pytest.fixture(scope="module")
def front(
    tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[Upstream, Upstream]
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("resilience")
    tiny = write_tiny_llama_gguf(tmp / "tiny.gguf")
    env = {
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": "tiny-local", "model_path": str(tiny)}]),
        "ALIZE_DEFAULT_MODEL": "tiny-local",
        "ALIZE_ENGINE__PARALLEL": "2",
        "ALIZE_ENGINE__CTX_PER_SLOT": "256",
        "ALIZE_ENGINE__THREADS": "1",
        "ALIZE_CHAT__ENABLED": "false",
    }
    flaky, healthy = upstreams
    with live_server(tmp, env) as server:
        for card in (_card("up-flaky", flaky), _card("up-healthy", healthy)):
            assert admin(server, "POST", "/models", {"card": card}).status_code == 201
        for name, model, fallbacks in (
            ("b", "up-healthy", []),
            ("a", "up-flaky", ["b"]),
            ("a-solo", "up-flaky", []),
        ):
            body = {"name": name, "model": model, "fallbacks": fallbacks}
            created = admin(server, "POST", "/deployments", body)
            assert created.status_code == 201, created.text
        yield server


def _chat(front: LiveServer, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(front.v1 + "/chat/completions", json={**BODY, "model": model, **extra}, timeout=60)


def _row(front: LiveServer, response: httpx.Response) -> dict[str, Any]:
    found = admin(front, "GET", f"/usage/requests/{response.headers['x-request-id']}")
    assert found.status_code == 200, found.text
    row: dict[str, Any] = found.json()
    return row


def _text(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def test_retries_honour_retry_after_and_are_told(
    front: LiveServer, upstreams: tuple[Upstream, Upstream]
) -> None:
    flaky, _ = upstreams
    flaky.control("ok", ["500"])
    r = _chat(front, "a-solo")
    assert r.status_code == 200 and _text(r) == "Hello from U1"
    assert r.headers["x-alize-retries"] == "1" and "x-alize-fallback" not in r.headers
    row = _row(front, r)
    assert (row["deployment"], row["served_by"], row["retries"], row["status"]) == (
        "a-solo",
        "a-solo",
        1,
        "success",
    )
    flaky.control("ok", ["429:1"])
    started = time.monotonic()
    r = _chat(front, "a-solo")
    assert r.status_code == 200 and r.headers["x-alize-retries"] == "1"
    assert time.monotonic() - started >= 1.0  # the upstream's Retry-After was waited for
    # retries exhausted: the client sees the upstream's failure and how many retries it took
    flaky.control("ok", ["500", "500"])
    r = _chat(front, "a-solo")
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
    assert r.headers["x-alize-retries"] == "1"


def test_a_failing_upstream_falls_back_then_the_circuit_opens_and_closes(
    front: LiveServer, upstreams: tuple[Upstream, Upstream]
) -> None:
    flaky, healthy = upstreams
    flaky.control("500")
    before_flaky, before_healthy = flaky.calls(), healthy.calls()
    r = _chat(front, "a")
    assert r.status_code == 200 and _text(r) == "Hello from U2"
    assert r.headers["x-alize-deployment"] == "b" and r.json()["model"] == "a"
    assert r.headers["x-alize-fallback"] == "a;reason=down;code=upstream_error"
    assert r.headers["x-alize-retries"] == "1"
    row = _row(front, r)
    assert (row["deployment"], row["served_by"], row["retries"]) == ("a", "b", 1)
    assert row["fallback"] == "a;reason=down;code=upstream_error"
    usage = r.json()["usage"]
    assert row["cost_micros"] == -(
        -(usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT) // 10**6
    )
    assert (flaky.calls() - before_flaky, healthy.calls() - before_healthy) == (2, 1)
    # two more failed attempts open a's circuit (4 in a row): then a is skipped without a call
    r = _chat(front, "a")
    assert r.status_code == 200 and r.headers["x-alize-deployment"] == "b"
    opened_at = flaky.calls()
    r = _chat(front, "a")
    assert r.status_code == 200 and r.headers["x-alize-fallback"] == "a;reason=down;code=circuit_open"
    assert flaky.calls() == opened_at
    # after the cool-down one trial goes through; it succeeds and the circuit closes
    flaky.control("ok")
    time.sleep(2.2)
    r = _chat(front, "a")
    assert r.status_code == 200 and _text(r) == "Hello from U1" and "x-alize-fallback" not in r.headers
    assert flaky.calls() == opened_at + 1


def test_a_hang_or_garbage_is_cut_at_the_timeout_and_falls_back(
    front: LiveServer, upstreams: tuple[Upstream, Upstream]
) -> None:
    flaky, _ = upstreams
    flaky.control("ok", ["hang"])
    started = time.monotonic()
    r = _chat(front, "a-solo")
    assert r.status_code == 502 and "did not answer within 2 s" in r.json()["error"]["message"]
    assert 1.9 < time.monotonic() - started < 10
    flaky.control("ok", ["hang"])
    r = _chat(front, "a", stream=True)
    assert r.status_code == 200 and r.headers["x-alize-fallback"] == "a;reason=down;code=upstream_error"
    assert "U2" in r.text and r.text.rstrip().endswith("data: [DONE]")
    flaky.control("ok", ["garbage"])
    r = _chat(front, "a-solo")
    assert r.status_code == 502 and "no event stream" in r.json()["error"]["message"]
    flaky.control("ok", ["429:30"])  # longer than Alizé waits: the upstream is overloaded
    r = _chat(front, "a")
    assert (
        r.status_code == 200
        and r.headers["x-alize-fallback"] == "a;reason=overloaded;code=upstream_rate_limited"
    )
    r = _chat(front, "a")
    assert r.status_code == 200 and "x-alize-fallback" not in r.headers  # U1 serves again


def test_a_killed_upstream_ends_its_stream_with_an_error_and_the_next_request_falls_back(
    front: LiveServer, upstreams: tuple[Upstream, Upstream]
) -> None:
    flaky, _ = upstreams
    flaky.control("slow")
    events: list[str] = []
    with httpx.stream(
        "POST", front.v1 + "/chat/completions", json={**BODY, "model": "a", "stream": True}, timeout=60
    ) as streamed:
        assert streamed.status_code == 200
        request_id = streamed.headers["x-request-id"]
        for line in streamed.iter_lines():
            if line.startswith("data:"):
                events.append(line[5:].strip())
                if len(events) == 3:
                    _stop(flaky)  # the upstream process dies mid-stream
    assert events[-1] != "[DONE]" and "error" in json.loads(events[-1])
    assert json.loads(events[-1])["error"]["code"] == "upstream_error"
    row = admin(front, "GET", f"/usage/requests/{request_id}").json()
    assert (row["status"], row["served_by"], row["error_code"]) == ("error", "a", "upstream_error")
    assert row["completion_tokens"] >= 2  # what was streamed before the kill is billed, once
    r = _chat(front, "a")
    assert r.status_code == 200 and _text(r) == "Hello from U2"
    assert r.headers["x-alize-fallback"] in (
        "a;reason=down;code=engine_unavailable",
        "a;reason=down;code=circuit_open",
    )
    r = _chat(front, "a-solo")
    assert r.status_code == 503 and r.json()["error"]["code"] in ("engine_unavailable", "circuit_open")
    # one ledger row per request, whatever happened to it (the tests above run in file order):
    # fallbacks are metered under the deployment the client called, never under b as well
    listed = admin(front, "GET", "/usage?group_by=deployment").json()["data"]
    counts = {g["group"]: g["requests"] for g in listed}
    assert {name: counts.get(name, 0) for name in ("a", "a-solo", "b")} == {"a": 9, "a-solo": 6, "b": 0}


def test_fallbacks_are_shown_and_changed_live(front: LiveServer) -> None:
    view = admin(front, "GET", "/deployments/a").json()
    assert view["fallbacks"] == ["b"]
    changed = admin(front, "PATCH", "/deployments/a-solo", {"fallbacks": ["b"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["fallbacks"] == ["b"] and changed.json()["state"]["loaded"]  # not reloaded
    r = _chat(front, "a-solo")  # its upstream was killed above: b answers now
    assert r.status_code == 200 and r.headers["x-alize-deployment"] == "b"
    bad = admin(front, "PATCH", "/deployments/a-solo", {"fallbacks": ["not a name!"]})
    assert bad.status_code == 422 and "fallback" in bad.json()["error"]["message"]
