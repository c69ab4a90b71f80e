"""The catalog and run-time deployments on a live server: add a tiny GGUF (CLI), deploy it, chat
with it, watch it scale to zero and come back, serve three deployments at once, refuse malformed
files, and find everything again after a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from tests.e2e.server import LiveServer, admin, cli, live_server
from tests.fixtures.tiny_gguf import write_malformed_gguf, write_tiny_llama_gguf

pytestmark = pytest.mark.e2e

ENV = {
    "ALIZE_ENGINE__PARALLEL": "2",
    "ALIZE_ENGINE__CTX_PER_SLOT": "1024",
    "ALIZE_ENGINE__CACHE_RAM_MIB": "0",
    "ALIZE_CATALOG__IDLE_CHECK_INTERVAL_S": "0.25",
    # the memory checks watch a worker come and go; the start-up prewarm imports PyTorch into
    # the gateway meanwhile (seen: the tree 13 MB larger after the unload than before it)
    "ALIZE_ENGINE__PREWARM": "false",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("catalog")


@pytest.fixture(scope="module")
def tiny_path(workdir: Path) -> Path:
    return write_tiny_llama_gguf(workdir / "tiny-llama.gguf")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[LiveServer]:
    with live_server(workdir, {**ENV, "ALIZE_DATA_DIR": str(workdir / "data")}) as s:
        yield s


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pending.extend(int(c) for c in children)
    return total


def chat(client: openai.OpenAI, model: str) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0
    )


def test_builtins_are_listed_with_their_metadata(server: LiveServer) -> None:
    models = {m["id"]: m for m in admin(server, "GET", "/models").json()["data"]}
    assert {"smollm2-135m-instruct", "gemma3-270m", "all-minilm-l6-v2"} <= set(models)
    assert models["all-minilm-l6-v2"]["tasks"] == ["embeddings"]
    assert models["all-minilm-l6-v2"]["engine"] == "torch"
    assert models["smollm2-135m-instruct"]["deployments"] == ["smollm2-135m-instruct"]
    with openai.OpenAI(base_url=server.v1, api_key="x") as client:
        listed = {m.id: m for m in client.models.list().data}
    card = listed["smollm2-135m-instruct"].model_extra["card"]  # type: ignore[index]
    assert card["tasks"] == ["chat", "completion"] and card["deployment"]["replicas"] == 1
    assert "source" not in card  # no local paths in the public listing


@pytest.mark.parametrize("kind", ["truncated", "wrong_magic", "absurd_tensor_count"])
def test_malformed_gguf_is_refused_and_the_server_keeps_serving(
    server: LiveServer, workdir: Path, kind: str
) -> None:
    path = write_malformed_gguf(workdir / f"bad-{kind}.gguf", kind)  # type: ignore[arg-type]
    response = admin(server, "POST", "/models", {"path": str(path)})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_model_file" and f"bad-{kind}.gguf" in error["message"]
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    assert admin(server, "GET", f"/models/bad-{kind}").status_code == 404
    with openai.OpenAI(base_url=server.v1, api_key="x") as client:
        reply = chat(client, "smollm2-135m-instruct").parse()
    assert reply.choices[0].message.content is not None


def test_add_deploy_chat_idle_unload_and_undeploy(server: LiveServer, tiny_path: Path) -> None:
    added = cli(server, "models", "add", str(tiny_path), "--id", "tiny")
    assert added.returncode == 0, added.stderr
    assert "added tiny" in added.stdout
    deployed = cli(server, "deploy", "tiny", "--name", "tiny-idle", "--idle-timeout", "2", "--parallel", "1")
    assert deployed.returncode == 0, deployed.stderr
    with openai.OpenAI(base_url=server.v1, api_key="x") as client:
        # at rest the deployment holds no worker process
        assert admin(server, "GET", "/deployments/tiny-idle").json()["state"]["loaded"] is False
        before = tree_rss_bytes(server.process.pid)
        raw = chat(client, "tiny-idle")
        assert int(raw.headers["x-alize-cold-start-ms"]) >= 0
        assert raw.parse().model == "tiny-idle"
        state = admin(server, "GET", "/deployments/tiny-idle").json()["state"]
        assert state["loaded"] is True and len(state["worker_pids"]) == 1
        worker = state["worker_pids"][0]
        loaded_rss = tree_rss_bytes(server.process.pid)
        assert loaded_rss > before

        # idle past the timeout: the worker process is gone and memory drops
        deadline = time.monotonic() + 30
        while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert not Path(f"/proc/{worker}").exists(), "the idle worker was not stopped"
        assert admin(server, "GET", "/deployments/tiny-idle").json()["state"]["loaded"] is False
        unloaded_rss = tree_rss_bytes(server.process.pid)
        assert unloaded_rss < loaded_rss - 10 * 1024 * 1024, (before, loaded_rss, unloaded_rss)

        # the next request reloads it and says so
        again = chat(client, "tiny-idle")
        assert "x-alize-cold-start-ms" in again.headers
        warm = chat(client, "tiny-idle")
        assert "x-alize-cold-start-ms" not in warm.headers

        refused = cli(server, "models", "rm", "tiny")
        assert refused.returncode == 1 and "undeploy" in refused.stderr
        gone = cli(server, "undeploy", "tiny-idle")
        assert gone.returncode == 0, gone.stderr
        with pytest.raises(openai.NotFoundError):
            chat(client, "tiny-idle")


def test_three_deployments_over_two_models_answer_concurrently(server: LiveServer, tiny_path: Path) -> None:
    if admin(server, "GET", "/models/tiny").status_code == 404:
        assert admin(server, "POST", "/models", {"path": str(tiny_path), "id": "tiny"}).status_code == 201
    for body in (
        {"name": "tiny-fast", "model": "tiny", "parallel": 2},
        {"name": "tiny-wide", "model": "tiny", "parallel": 1, "replicas": 2, "ctx_per_slot": 128},
    ):
        response = admin(server, "POST", "/deployments", body)
        assert response.status_code == 201, response.text
    with openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=120) as client:
        names = ["tiny-fast", "tiny-wide", "smollm2-135m-instruct"] * 3
        with ThreadPoolExecutor(len(names)) as pool:
            replies = list(pool.map(lambda n: chat(client, n).parse(), names))
        assert [r.model for r in replies] == names
        assert all(r.choices[0].finish_reason in ("stop", "length") for r in replies)
        wide = admin(server, "GET", "/deployments/tiny-wide").json()
        assert wide["replicas"] == 2 and wide["ctx_per_slot"] == 128
        assert sum(wide["state"]["served_per_replica"]) == 3
        listed = {m.id for m in client.models.list().data}
        assert {"tiny-fast", "tiny-wide", "smollm2-135m-instruct", "all-minilm-l6-v2"} <= listed


def test_bench_measures_a_model_and_its_card_shows_the_figures(server: LiveServer, tiny_path: Path) -> None:
    if admin(server, "GET", "/models/tiny").status_code == 404:
        assert admin(server, "POST", "/models", {"path": str(tiny_path), "id": "tiny"}).status_code == 201
    if admin(server, "GET", "/deployments/tiny-fast").status_code == 404:
        assert (
            admin(server, "POST", "/deployments", {"name": "tiny-fast", "model": "tiny"}).status_code == 201
        )
    assert admin(server, "GET", "/models/tiny").json()["measured"] is None
    done = cli(
        server, "models", "bench", "tiny", "--runs", "2", "--prompt-tokens", "200", "--decode-tokens", "16"
    )
    assert done.returncode == 0, done.stderr
    assert "prefill" in done.stdout and "decode" in done.stdout and "tokens/s" in done.stdout
    measured = admin(server, "GET", "/models/tiny").json()["measured"]
    assert measured["prefill_tokens_per_second"] > 0 and measured["decode_tokens_per_second"] > 0
    assert measured["runs"] == 2 and measured["engine"] == "llamacpp" and measured["threads"] >= 1
    with openai.OpenAI(base_url=server.v1, api_key="x") as client:
        listed = {m.id: m for m in client.models.list().data}
    card = listed["tiny-fast"].model_extra["card"]  # type: ignore[index]
    assert card["measured"] == measured and card["tokens_per_second"] == measured["decode_tokens_per_second"]
    assert "prefill" in httpx.get(server.url + "/catalog", timeout=30).text
    refused = admin(server, "POST", "/models/tiny/benchmark", {"runs": 0})
    assert refused.status_code == 422, refused.text
    missing = admin(server, "POST", "/models/nope/benchmark")
    assert missing.status_code == 404, missing.text


def test_catalog_page_renders_escaped_cards(server: LiveServer, tiny_path: Path) -> None:
    """A card whose operator-written fields carry markup is shown as text on the page."""
    added = admin(server, "POST", "/models", {"path": str(tiny_path), "id": "tiny-markup"})
    assert added.status_code == 201, added.text
    marked = {
        "display_name": '<script>window.__x=1</script>Tiny "quoted"',
        "description": "<img src=x onerror=alert(1)> & <b>bold</b>",
        "publisher": "</td><td onclick=alert(2)>",
    }
    assert admin(server, "PATCH", "/models/tiny-markup", marked).status_code == 200
    try:
        page = httpx.get(server.url + "/catalog", timeout=30)
    finally:
        assert admin(server, "DELETE", "/models/tiny-markup").status_code == 200
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    html = page.text
    assert 'data-id="tiny-markup"' in html
    assert "&lt;script&gt;window.__x=1&lt;/script&gt;Tiny" in html
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    for raw in ("<script>window.__x", "<img src=x", "<b>bold", "<td onclick"):
        assert raw not in html, raw
    for model in ("smollm2-135m-instruct", "gemma3-270m", "all-minilm-l6-v2"):
        assert f'data-id="{model}"' in html
    assert "/v1/embeddings" in html and "client.chat.completions.create" in html
    assert '<option value="embeddings">' in html and '<option value="apache-2.0">' in html


def test_everything_is_back_after_a_restart(server: LiveServer, workdir: Path, tiny_path: Path) -> None:
    if admin(server, "GET", "/models/tiny").status_code == 404:
        assert admin(server, "POST", "/models", {"path": str(tiny_path), "id": "tiny"}).status_code == 201
    if admin(server, "GET", "/deployments/tiny-fast").status_code == 404:
        assert (
            admin(server, "POST", "/deployments", {"name": "tiny-fast", "model": "tiny"}).status_code == 201
        )
    updated = admin(server, "PATCH", "/models/gemma3-270m", {"price_output_per_million": 123})
    assert updated.status_code == 200, updated.text
    with live_server(workdir, {**ENV, "ALIZE_DATA_DIR": str(workdir / "data")}) as again:
        models = {m["id"]: m for m in admin(again, "GET", "/models").json()["data"]}
        assert models["gemma3-270m"]["price_output_per_million"] == 123
        assert models["gemma3-270m"]["context_length"] == 32768
        assert models["smollm2-135m-instruct"]["tasks"] == ["chat", "completion"]
        assert models["all-minilm-l6-v2"]["embedding_dimensions"] == 384
        assert "tiny-fast" in models["tiny"]["deployments"]
        with openai.OpenAI(base_url=again.v1, api_key="x") as client:
            reply = chat(client, "tiny-fast").parse()
        assert reply.model == "tiny-fast"
