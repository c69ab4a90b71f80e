"""``/metrics`` on a live server with the real llama.cpp engine (SmolLM2 135M): after known
traffic every counter and histogram moved by exactly what the responses reported, the worker's
own ``llamacpp:*`` families appear under the deployment's label and agree on the tokens, and the
JSON log carries the requests' facts but no key and no prompt text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import LiveServer, live_server
from tests.observability.promtext import value

pytestmark = pytest.mark.e2e

ADMIN = "e2e-metrics-admin-0123456789abcdefgh"
PROMPT = "Name three colours of the rainbow, please, quokka."


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("metrics"),
        {"ALIZE_ENGINE__PARALLEL": "2", "ALIZE_ENGINE__CTX_PER_SLOT": "1024", "ALIZE_ADMIN_KEY": ADMIN},
    ) as s:
        yield s


def scrape(server: LiveServer) -> str:
    r = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def test_counters_histograms_and_worker_metrics_after_real_requests(metrics_server: LiveServer) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    key = httpx.post(f"{metrics_server.url}/admin/api/keys", json={"name": "m"}, headers=admin, timeout=10)
    assert key.status_code == 201, key.text
    plaintext = key.json()["key"]
    before = scrape(metrics_server)
    dep = {"deployment": MODEL}
    usages = []
    with httpx.Client(base_url=metrics_server.url, timeout=120) as client:
        for stream in (False, True):
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": 12,
                "temperature": 0,
                "stream": stream,
                "stream_options": {"include_usage": True} if stream else None,
            }
            r = client.post(
                "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {plaintext}"}
            )
            assert r.status_code == 200, r.text
            if stream:
                chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
                usages.append(chunks[-1]["usage"])
            else:
                usages.append(r.json()["usage"])
    after = scrape(metrics_server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    prompt = sum(u["prompt_tokens"] for u in usages)
    completion = sum(u["completion_tokens"] for u in usages)
    assert completion > 0
    assert moved("alize_requests_total", status="success", **dep) == 2
    assert moved("alize_prompt_tokens_total", **dep) == prompt
    assert moved("alize_generation_tokens_total", **dep) == completion
    assert moved("alize_time_to_first_token_seconds_count", **dep) == 2
    assert moved("alize_e2e_request_latency_seconds_count", **dep) == 2
    assert moved("alize_request_queue_time_seconds_count", **dep) == 2
    # one gap between consecutive tokens (llama.cpp streams one token per event)
    assert moved("alize_inter_token_latency_seconds_count", **dep) == completion - 2
    assert moved("alize_http_requests_total", route="/v1/chat/completions", status="200") == 2
    assert value(after, "alize_deployment_loaded", **dep) == 1
    assert value(after, "alize_slots_total", **dep) == 2
    # the worker's own families, merged under the deployment's label
    assert moved("llamacpp:tokens_predicted_total", replica="0", **dep) == completion
    assert moved("llamacpp:prompt_tokens_total", replica="0", **dep) <= prompt  # the cache may skip some
    assert after.count("# TYPE llamacpp:tokens_predicted_total") <= 1

    log = metrics_server.log()
    assert plaintext not in log and ADMIN not in log and "quokka" not in log
    settled = [json.loads(line) for line in log.splitlines() if '"request settled"' in line]
    assert len(settled) >= 2 and all(s["request_id"] != "-" for s in settled)
    assert {s["deployment"] for s in settled} == {MODEL}


def test_an_inference_key_cannot_scrape(metrics_server: LiveServer) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    key = httpx.post(f"{metrics_server.url}/admin/api/keys", json={"name": "n"}, headers=admin, timeout=10)
    inference = {"Authorization": f"Bearer {key.json()['key']}"}
    assert httpx.get(f"{metrics_server.url}/metrics", headers=inference, timeout=10).status_code == 403
    assert httpx.get(f"{metrics_server.url}/metrics", timeout=10).status_code == 401


def test_alize_bench_reports_what_the_server_metered(metrics_server: LiveServer, tmp_path: Path) -> None:
    """``alize bench`` at 2 clients: its token count equals what the server metered, and it writes
    its JSON and PNG."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    key = httpx.post(f"{metrics_server.url}/admin/api/keys", json={"name": "b"}, headers=admin, timeout=10)
    before = scrape(metrics_server)
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    done = subprocess.run(
        [sys.executable, "-m", "alize.cli.main", "bench", "--base-url", metrics_server.v1, "--model", MODEL,
         "--concurrency", "2", "--num-prompts", "6", "--output-len", "16", "--goodput", "ttft:60000",
         "--json", str(out), "--plot", str(png)],
        env={**os.environ, "ALIZE_API_KEY": key.json()["key"]},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    report = record["report"]
    assert report["completed"] == 6 and report["failed"] == 0
    assert report["goodput"]["good_requests"] == 6
    assert report["ttft_ms"]["p50"] > 0 and report["tpot_ms"]["p50"] > 0
    after = scrape(metrics_server)
    metered = value(after, "alize_generation_tokens_total", deployment=MODEL) - value(
        before, "alize_generation_tokens_total", deployment=MODEL
    )
    assert report["output_tokens"] == metered
    assert record["machine"]["cpu"] and len(record["requests"]) == 6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
