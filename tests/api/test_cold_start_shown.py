"""The measured cold start is shown: ``cold_start`` in ``GET /v1/models`` (null until the first
load, then last/p50/max over the loads), in the admin deployment view, and on the catalog page."""

from __future__ import annotations

from pathlib import Path

from tests.support.apps import scripted_client

from alize.api.catalog_page import cold_start_text, render_card
from alize.catalog.builtin import builtin_card


def test_v1_models_shows_each_load_of_a_deployment(tmp_path: Path) -> None:
    with scripted_client(tmp_path) as client:
        assert client.get("/v1/models/echo").json()["cold_start"] is None
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        reply = client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200
        waited = int(reply.headers["x-alize-cold-start-ms"])
        shown = client.get("/v1/models/echo").json()["cold_start"]
        assert shown["loads"] == 1 and shown["last_s"] == shown["p50_s"] == shown["max_s"]
        assert abs(shown["last_s"] * 1000 - waited) <= 1
        listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert listed["echo"]["cold_start"] == shown and listed["slow"]["cold_start"] is None
        state = client.get("/admin/api/deployments/echo").json()["state"]
        assert state["cold_start"] == shown


def test_the_catalog_page_shows_the_loads_of_the_deployments_of_a_card() -> None:
    card = builtin_card("smollm2-135m-instruct")
    loads = {"chat": {"last_s": 0.8, "p50_s": 0.9, "max_s": 1.25, "loads": 3}, "idle": None}
    assert cold_start_text(loads) == "chat: p50 0.90 s, max 1.25 s over 3 load(s)"
    assert cold_start_text({"idle": None}) == "not loaded on this server yet"
    html = render_card(card, ["chat"], "http://127.0.0.1", loads)
    assert "<dt>Cold start</dt><dd>chat: p50 0.90 s, max 1.25 s over 3 load(s)</dd>" in html
