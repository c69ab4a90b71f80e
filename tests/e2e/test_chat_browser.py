"""The chat page in a real browser (Playwright driving Debian's Chromium) against a live server.

Users are made with ``alize users create`` before the server starts. Replies come from the
real llama.cpp engine (two deployments of the packaged SmolLM2, so the model picker has a
choice), and document passages are embedded by the real ``all-minilm-l6-v2`` deployment.
Screenshots for the README are written to docs/images/ only with ``ALIZE_UPDATE_SCREENSHOTS=1``
(a plain test run never changes tracked files); otherwise to the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.e2e.server import LiveServer, live_server
from tests.support.installed import import_or_missing, missing

pytestmark = pytest.mark.e2e

playwright_sync = import_or_missing("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
PASSWORD = "correct horse battery"
ALICE, BOB = "alice@example.com", "bob@example.com"
REPLY_TIMEOUT_MS = 180_000

XSS_PAYLOADS = (
    '<img src=x onerror="window.__xss=1;alert(1)">',
    "<script>window.__xss=2;alert(2)</script>",
    "[click me](javascript:window.__xss=3;alert(3))",
    '<svg onload="window.__xss=4;alert(4)"><circle r=1 /></svg>',
    "![pic](javascript:alert(5))",
    '<a href="javascript:alert(6)" onclick="alert(7)">raw link</a>',
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCg4KTwvc2NyaXB0Pg==)",
)


def _create_user(env: dict[str, str], email: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "alize.cli.main",
            "users",
            "create",
            "--project",
            "chat-e2e",
            "--email",
            email,
            "--password-stdin",
            "--create-project",
        ],
        input=PASSWORD + "\n",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    if not CHROMIUM.exists():
        missing("Debian's chromium is not installed (apt-get install -y chromium)")
    tmp = tmp_path_factory.mktemp("chat")
    env = {
        "ALIZE_DATA_DIR": str(tmp / "data"),
        "ALIZE_DEPLOYMENTS": json.dumps(
            [
                {"name": "smollm2-135m-instruct"},
                {"name": "smollm2-alt", "model": "smollm2-135m-instruct"},
                {"name": "all-minilm-l6-v2"},
            ]
        ),
        "ALIZE_ENGINE__PARALLEL": "2",
        "ALIZE_ENGINE__CTX_PER_SLOT": "2048",
        "ALIZE_CHAT__MAX_TOKENS": "64",
        "ALIZE_CHAT__TEMPERATURE": "0",
    }
    ids = {ALICE: _create_user(env, ALICE), BOB: _create_user(env, BOB)}
    with live_server(tmp, env) as server:
        yield server, {**ids, "database": f"sqlite+aiosqlite:///{tmp / 'data' / 'alize.db'}"}


@pytest.fixture(scope="module")
def browser(chat_server: tuple[LiveServer, dict[str, str]]) -> Iterator[playwright_sync.Browser]:
    with playwright_sync.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


def _page(browser: playwright_sync.Browser, url: str, locale: str = "en-US") -> playwright_sync.Page:
    # bypass_csp: the page's Content-Security-Policy would also stop injected script; the tests
    # switch it off so they prove the renderer itself never creates script (and so that
    # Playwright's own wait_for_function, which evaluates strings, may run)
    context = browser.new_context(locale=locale, viewport={"width": 1200, "height": 820}, bypass_csp=True)
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]
    response = None
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    response = page.goto(url)
    assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("body[data-ready=true]")
    return page


def _login(
    browser: playwright_sync.Browser, server: LiveServer, email: str, path: str = "/"
) -> playwright_sync.Page:
    page = _page(browser, server.url + path)
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    page.wait_for_selector("#prompt")
    return page


SAVED_REPLIES = "document.querySelectorAll('.message.assistant[data-id]:not([data-id=\"\"])').length"


def _send(page: playwright_sync.Page, text: str) -> None:
    page.evaluate(f"window.__before = {SAVED_REPLIES}")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def _wait_reply(page: playwright_sync.Page) -> None:
    """Until the reply to the last ``_send`` is streamed and saved (shown with its id)."""
    page.wait_for_function(
        f"{SAVED_REPLIES} > window.__before && !document.body.classList.contains('is-streaming')",
        timeout=REPLY_TIMEOUT_MS,
    )


def _wait_saved_status(page: playwright_sync.Page, conversation: str, status: str) -> None:
    """Until the store holds an assistant message with ``status`` (an event, not a fixed wait)."""
    for _ in range(600):
        statuses = page.evaluate(
            """async (id) => {
              const r = await fetch('/chat/api/conversations/' + id, {credentials: 'same-origin'});
              return (await r.json()).messages.filter(m => m.role === 'assistant').map(m => m.status);
            }""",
            conversation,
        )
        if status in statuses:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"no {status} reply saved in {conversation}: {statuses}")


def _conversation_id(page: playwright_sync.Page) -> str:
    page.wait_for_url("**/c/*")
    return page.url.rsplit("/c/", 1)[1]


def test_login_send_and_watch_the_reply_stream(
    chat_server: tuple[LiveServer, dict[str, str]], browser: playwright_sync.Browser, tmp_path: Path
) -> None:
    server, ids = chat_server
    page = _login(browser, server, ALICE)
    # count the updates of the reply while it streams
    page.evaluate(
        """() => {
          window.__updates = 0;
          new MutationObserver((records) => {
            for (const r of records) {
              if (r.target.closest && r.target.closest('.message.streaming')) window.__updates++;
            }
          }).observe(document.querySelector('#messages'),
                     {subtree: true, childList: true, characterData: true});
        }"""
    )
    _send(page, "Write three short sentences about the sea.")
    page.wait_for_selector(".message.assistant.streaming", timeout=30_000)
    _wait_reply(page)
    assert page.evaluate("window.__updates") >= 3
    reply = page.locator(".message.assistant .content").last.inner_text()
    assert reply.strip()
    # the conversation is stored: it is in the sidebar and survives a reload
    conversation = _conversation_id(page)
    page.reload()
    page.wait_for_selector(".message.assistant")
    assert (
        page.locator(".message.user .content").first.inner_text()
        == "Write three short sentences about the sea."
    )
    assert page.locator("#conversations .conv-title").count() >= 1
    images = IMAGES if os.environ.get("ALIZE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    images.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(images / "chat.png"))
    assert (images / "chat.png").stat().st_size > 10_000
    assert conversation
    page.context.close()
    # the reply went through the policy pipeline: metered under the user's project
    database = Path(ids["database"].split("///", 1)[1])
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT u.completion_tokens, u.status FROM usage u JOIN projects p ON p.id = u.project_id "
            "WHERE p.name = 'chat-e2e'"
        ).fetchall()
    assert rows and all(tokens > 0 for tokens, _status in rows), rows


def test_stop_a_reply_keeps_the_partial_text(
    chat_server: tuple[LiveServer, dict[str, str]], browser: playwright_sync.Browser
) -> None:
    server, _ = chat_server
    page = _login(browser, server, ALICE)
    _send(page, "Tell me a very long story about a dragon, a knight and a castle, with many details.")
    page.wait_for_function(
        "document.querySelector('.message.streaming .content')?.innerText.trim().length > 0"
        " && !document.querySelector('.message.streaming .content .muted')",
        timeout=REPLY_TIMEOUT_MS,
    )
    page.keyboard.press("Escape")
    page.wait_for_selector("#send:not([hidden])")
    page.wait_for_selector(".message.assistant[data-status=stopped]")
    # the partial reply is saved as stopped: wait for the store to say so, then reload
    conversation = _conversation_id(page)
    _wait_saved_status(page, conversation, "stopped")
    page.reload()
    page.wait_for_selector(".message.assistant[data-status=stopped][data-id]", timeout=15_000)
    # the slot was freed: the next reply arrives
    _send(page, "Say hi.")
    page.wait_for_selector(".message.assistant[data-status=complete]", timeout=REPLY_TIMEOUT_MS)
    page.context.close()


def test_switch_model(
    chat_server: tuple[LiveServer, dict[str, str]], browser: playwright_sync.Browser
) -> None:
    server, _ = chat_server
    page = _login(browser, server, ALICE)
    options = page.locator("#model option").all_inner_texts()
    assert "smollm2-alt" in options and "all-minilm-l6-v2" not in options
    page.select_option("#model", "smollm2-alt")
    _send(page, "What is two plus two?")
    _wait_reply(page)
    assert "smollm2-alt" in page.locator(".message.assistant .who").last.inner_text()
    conversation = _conversation_id(page)
    page.reload()
    page.wait_for_selector(".message.assistant")
    assert page.input_value("#model") == "smollm2-alt"
    assert conversation
    page.context.close()


def test_interface_in_french_is_saved_for_the_user(
    chat_server: tuple[LiveServer, dict[str, str]], browser: playwright_sync.Browser
) -> None:
    server, _ = chat_server
    page = _login(browser, server, BOB)
    assert page.inner_text("#send") == "Send"
    page.click("#settings-open")
    page.select_option("#setting-language", "fr")
    page.wait_for_function("document.documentElement.lang === 'fr'")
    page.keyboard.press("Escape")
    assert page.inner_text("#send") == "Envoyer"
    assert page.get_attribute("#prompt", "placeholder", timeout=5000).startswith("Écrivez")  # type: ignore[union-attr]
    page.context.close()
    page = _page(browser, server.url + "/", locale="en-US")  # a new browser session: same user, new login
    page.fill("#email", BOB)
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    page.wait_for_selector("#prompt")
    assert page.inner_text("#send") == "Envoyer"
    page.click("#settings-open")
    page.select_option("#setting-language", "en")
    page.wait_for_function("document.documentElement.lang === 'en'")
    page.context.close()


def test_a_french_browser_gets_a_french_login_page(
    chat_server: tuple[LiveServer, dict[str, str]], browser: playwright_sync.Browser
) -> None:
    server, _ = chat_server
    page = _page(browser, server.url + "/", locale="fr-FR")
    assert page.inner_text("form.login button") == "Se connecter"
    # AI Act: before anything else, people are told they will talk to an AI system
    assert "système d'intelligence artificielle" in page.inner_text("#ai-notice")
    page.context.close()


@pytest.mark.parametrize(
    ("lang", "words"),
    [("en", "AI system"), ("de", "KI-System"), ("es", "inteligencia artificial"), ("it", "intelligenza")],
)
def test_the_ai_notice_is_shown_in_every_language(
    chat_server: tuple[LiveServer, dict[str, str]], browser: playwright_sync.Browser, lang: str, words: str
) -> None:
    server, _ = chat_server
    page = _page(browser, server.url + "/", locale=lang)
    assert words in page.inner_text("#ai-notice")
    page.context.close()


def test_the_user_downloads_all_their_data(
    chat_server: tuple[LiveServer, dict[str, str]], browser: playwright_sync.Browser
) -> None:
    """GDPR access: Settings -> download all my data gives a JSON of the user's conversations."""
    server, _ = chat_server
    page = _login(browser, server, ALICE)
    assert page.is_visible("#ai-notice")  # the notice stays under the composer
    page.click("#settings-open")
    with page.expect_download() as download_info:
        page.click("#export-my-data")
    data = json.loads(Path(download_info.value.path()).read_text())
    assert data["user"]["email"] == ALICE
    assert data["object"] == "chat.user_export" and isinstance(data["conversations"], list)
    assert "password" not in json.dumps(data)
    page.context.close()


def test_upload_a_document_and_open_a_citation(
    chat_server: tuple[LiveServer, dict[str, str]], browser: playwright_sync.Browser, tmp_path: Path
) -> None:
    server, _ = chat_server
    page = _login(browser, server, ALICE)
    notes = tmp_path / "lighthouse.txt"
    notes.write_text(
        "The Zorvath lighthouse stands on the island of Quenby.\n\n"
        "It was built in 1894 by the engineer Maelis Ardent and its light is green.\n\n"
        "Unrelated: the bakery in the village sells rye bread on Tuesdays."
    )
    page.set_input_files("#file", str(notes))
    page.wait_for_selector(".doc-chip:has-text('lighthouse.txt')", timeout=120_000)
    _send(page, "Who built the Zorvath lighthouse?")
    _wait_reply(page)
    chip = page.locator(".message.assistant .sources .source-chip").first
    assert "lighthouse.txt" in chip.inner_text()
    chip.click()
    panel = page.locator("#source-panel")
    panel.wait_for(state="visible")
    assert "lighthouse.txt" in panel.inner_text()
    assert "Maelis Ardent" in panel.locator(".source-text").inner_text()
    images = IMAGES if os.environ.get("ALIZE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    page.screenshot(path=str(images / "chat-citation.png"))
    assert (images / "chat-citation.png").stat().st_size > 10_000
    page.keyboard.press("Escape")
    panel.wait_for(state="hidden")
    page.context.close()


def test_another_user_cannot_open_the_conversation(
    chat_server: tuple[LiveServer, dict[str, str]], browser: playwright_sync.Browser
) -> None:
    server, _ = chat_server
    alice = _login(browser, server, ALICE)
    _send(alice, "Remember the number 42.")
    conversation = _conversation_id(alice)
    _wait_reply(alice)
    alice.context.close()
    bob = _login(browser, server, BOB)
    response = bob.goto(f"{server.url}/c/{conversation}")
    assert response is not None and response.status == 404
    bob.wait_for_selector("body[data-ready=true]")
    bob.wait_for_selector("#messages .error")
    assert bob.locator(".message").count() == 0
    status = bob.evaluate(
        "async (id) => (await fetch('/chat/api/conversations/' + id, {credentials: 'same-origin'})).status",
        conversation,
    )
    assert status == 404
    bob.context.close()
    assert httpx.get(f"{server.url}/chat/api/conversations/{conversation}").status_code == 401


async def _inject(database: str, user_id: str, conversation_id: str, payload: str) -> None:
    from alize.chat.conversations import ConversationService
    from alize.store.database import open_database

    db = await open_database(database)
    try:
        await ConversationService(db).add_message(user_id, conversation_id, role="assistant", content=payload)
    finally:
        await db.close()


def _assert_no_injection(page: playwright_sync.Page) -> None:
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert page.evaluate("window.__xss") is None
    found = page.evaluate(
        """() => {
          const root = document.querySelector('#messages');
          const tags = 'script, img, svg, iframe, object, embed, circle';
          const bad = [...root.querySelectorAll(tags)].map(e => e.tagName);
          for (const el of root.querySelectorAll('*')) {
            for (const a of el.attributes) if (a.name.startsWith('on')) bad.push(el.tagName + '@' + a.name);
          }
          for (const a of root.querySelectorAll('a')) {
            const href = a.getAttribute('href') || '';
            if (!/^(https?:|mailto:)/.test(href)) bad.push('a:' + href);
          }
          return bad;
        }"""
    )
    assert found == []


def test_xss_in_user_and_model_messages_does_not_run(
    chat_server: tuple[LiveServer, dict[str, str]], browser: playwright_sync.Browser
) -> None:
    server, ids = chat_server
    page = _login(browser, server, ALICE)
    page.click("#new-chat")
    _send(page, "Repeat exactly, with no other words: " + XSS_PAYLOADS[0] + " " + XSS_PAYLOADS[2])
    conversation = _conversation_id(page)
    _wait_reply(page)
    _send(page, "\n".join(XSS_PAYLOADS))
    page.wait_for_selector(".message.user >> nth=1")
    _wait_reply(page)
    # Playwright's sync API owns this thread's event loop: write through the store from another
    with ThreadPoolExecutor(1) as pool:
        payload = "Here you go:\n\n" + "\n\n".join(XSS_PAYLOADS)
        pool.submit(asyncio.run, _inject(ids["database"], ids[ALICE], conversation, payload)).result()
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector(".message.assistant >> text=Here you go")
    text = page.locator(".message.assistant").last.inner_text()
    assert "<img src=x" in text and "<script>" in text  # raw HTML is shown as text
    page.locator(".message.assistant").last.locator("text=click me").first.click()
    # a javascript: link would run on the click's task; let that task and a frame go by
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")
    _assert_no_injection(page)
    page.context.close()
