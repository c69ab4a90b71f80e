"""Structured logs: JSON lines with the request id, one ``request settled`` line per ledger row,
and never a key or the prompt's text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.observability.test_metrics import ADMIN, settings
from tests.support.apps import scripted_app

from alize.observability.logs import JsonFormatter, RedactSecrets, new_request_id, redact


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above, through the handler ``alize serve`` installs."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def test_no_key_or_prompt_text_reaches_the_logs(tmp_path: Path, lines: io.StringIO) -> None:
    secret_words = "zanzibar quetzal marmalade"
    with scripted_app(settings(tmp_path, admin_key=ADMIN)) as client:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        key = client.post("/admin/api/keys", json={"name": "app"}, headers=admin).json()["key"]
        body = {"model": "echo", "messages": [{"role": "user", "content": secret_words}]}
        ok = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        # a wrong key and a failing stream log warnings: they must not carry the key either
        bad = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}x"})
        assert bad.status_code == 401
        failing = {**body, "model": "error-mid-stream"}
        client.post("/v1/chat/completions", json=failing, headers={"Authorization": f"Bearer {key}"})
    text = lines.getvalue()
    assert text, "nothing was logged"
    records = [json.loads(line) for line in text.splitlines()]
    assert key not in text and ADMIN not in text
    for word in secret_words.split():
        assert word not in text
    settled = [r for r in records if r["message"] == "request settled"]
    assert {r["status"] for r in settled} == {"success", "error"}
    first = next(r for r in settled if r["status"] == "success")
    assert first["deployment"] == "echo" and first["completion_tokens"] == 3
    assert first["ledger_id"] == ok.headers["x-request-id"] or first["ledger_id"].startswith("req_")
    assert first["request_id"].startswith("http_")  # the HTTP request it was served in


def test_redaction_masks_keys_and_bearer_values() -> None:
    assert redact("got alz-abcdef0123456789XYZ in a header") == "got alz-abcdef… in a header"
    assert redact("Authorization: Bearer hunter2-secret") == "Authorization: Bearer …"
    assert redact("nothing secret") == "nothing secret"


def test_request_ids_are_taken_only_when_plain() -> None:
    assert new_request_id("trace-123_abc") == "trace-123_abc"
    assert new_request_id("bad id\nwith newline").startswith("http_")
    assert new_request_id("x" * 500).startswith("http_")
