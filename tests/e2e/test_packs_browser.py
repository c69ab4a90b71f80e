"""A French user asking in French gets a French answer from a pulled model pack (real browser).

Opt-in, because it installs a real pack (Qwen2.5-Coder 1.5B: 1.1 GB) and runs it on the CPU:
set ``ALIZE_E2E_PACK_INDEX_URL`` to an index holding the pack's wheels (a local mirror, e.g.
``file:///srv/mirror/simple``, or the public index) and, optionally, ``ALIZE_E2E_PACK`` to the
pack to try (default ``qwen2.5-coder-1.5b-instruct``). CI sets neither, so it is skipped there.

The server pulls the pack (the pull deploys it and makes it the assistant's default), then a
Chromium with a French locale logs in, asks a question in French and waits for the reply; the
reply must be French as lingua (the assistant's own language detector) reads it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from tests.e2e.server import LiveServer, live_server
from tests.e2e.test_chat_browser import CHROMIUM, PASSWORD, SAVED_REPLIES, _create_user, _page, _send
from tests.support.installed import import_or_missing, missing

from alize.chat.language import LanguageGuesser

pytestmark = pytest.mark.e2e
playwright_sync = import_or_missing("playwright.sync_api")
INDEX_URL = os.environ.get("ALIZE_E2E_PACK_INDEX_URL")
PACK = os.environ.get("ALIZE_E2E_PACK", "qwen2.5-coder-1.5b-instruct")
EMAIL = "camille@example.fr"
QUESTION = "Bonjour ! Peux-tu m'expliquer en deux phrases pourquoi le ciel est bleu ?"
#: a 1.5B model on 2 CPU cores, cold (the first turn loads it): minutes, not seconds, when shared
REPLY_TIMEOUT_MS = 900_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if not INDEX_URL:
        pytest.skip("set ALIZE_E2E_PACK_INDEX_URL to an index holding the pack's wheels to run this")
    if not CHROMIUM.exists():
        missing("Debian's chromium is not installed (apt-get install -y chromium)")
    tmp = tmp_path_factory.mktemp("pack-browser")
    env = {
        "ALIZE_DATA_DIR": str(tmp / "data"),
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": "smollm2-135m-instruct"}]),
        "ALIZE_CATALOG__PACK_INDEX_URL": INDEX_URL,
        "ALIZE_CHAT__MAX_TOKENS": "48",
        "ALIZE_CHAT__TEMPERATURE": "0",
    }
    _create_user(env, EMAIL)
    with live_server(tmp, env) as s:
        with httpx.Client(base_url=s.url + "/admin/api", timeout=60) as admin:
            assert admin.post(f"/packs/{PACK}/pull", json={}).status_code == 202
            deadline = time.monotonic() + 1800
            job = admin.get(f"/packs/{PACK}").json()["job"]
            while job["state"] not in ("done", "failed") and time.monotonic() < deadline:
                time.sleep(1)
                job = admin.get(f"/packs/{PACK}").json()["job"]
            assert job["state"] == "done", job
        yield s


@pytest.mark.timeout(2400)
def test_a_french_question_gets_a_french_answer_from_the_pulled_model(server: LiveServer) -> None:
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = _page(browser, server.url + "/", locale="fr-FR")
            page.fill("#email", EMAIL)
            page.fill("#password", PASSWORD)
            page.press("#password", "Enter")
            page.wait_for_selector("#prompt")
            assert page.input_value("#model") == PACK  # the pulled model is the default
            _send(page, QUESTION)
            page.wait_for_function(
                f"{SAVED_REPLIES} > window.__before && !document.body.classList.contains('is-streaming')",
                timeout=REPLY_TIMEOUT_MS,
            )
            reply = page.locator(".message.assistant").last.inner_text()
        finally:
            browser.close()
    print(f"\nreply of {PACK}: {reply}")
    assert len(reply.split()) >= 5
    assert LanguageGuesser().detect_sync(reply) == "fr", reply
