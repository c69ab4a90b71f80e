"""The admin console in a real browser (Playwright driving Debian's Chromium) on a live server
with the real engine: an inference key gets no console; an admin creates a key and sees its
secret once, the key works, revoking it makes the next call fail; the usage chart grows with
new traffic; hostile names are shown as text, never run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
ADMIN = "e2e-console-admin-0123456789abcdefg"
HOSTILE = '<img src=x onerror="window.__xss=1">'


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    with live_server(
        tmp_path_factory.mktemp("console"),
        {"ALIZE_ENGINE__PARALLEL": "2", "ALIZE_ENGINE__CTX_PER_SLOT": "1024", "ALIZE_ADMIN_KEY": ADMIN},
    ) as s:
        yield s


@pytest.fixture(scope="module")
def browser(console_server: LiveServer) -> Iterator[playwright_sync.Browser]:
    with playwright_sync.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


def admin_call(server: LiveServer, method: str, path: str, body: object = None) -> httpx.Response:
    return httpx.request(
        method, server.url + path, json=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
    )


def chat(server: LiveServer, key: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


def open_console(browser: playwright_sync.Browser, server: LiveServer, key: str) -> playwright_sync.Page:
    # bypass_csp only so Playwright's own wait_for_function may evaluate; the renderer is what
    # is under test (a page that never parses markup cannot run injected script)
    context = browser.new_context(viewport={"width": 1300, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    response = page.goto(server.url + "/admin")
    assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#admin-key")
    page.fill("#admin-key", key)
    page.click("#login button[type=submit]")
    return page


def ready(page: playwright_sync.Page) -> None:
    page.wait_for_selector("body[data-ready=true]")


def test_an_inference_key_gets_no_console(
    browser: playwright_sync.Browser, console_server: LiveServer
) -> None:
    created = admin_call(console_server, "POST", "/admin/api/keys", {"name": "plain"}).json()
    page = open_console(browser, console_server, created["key"])
    page.wait_for_selector("[role=alert]")
    assert "not an admin key" in page.inner_text("main")
    assert page.query_selector("#deployments") is None and not page.is_visible("#tabs")
    page.context.close()


def test_create_see_once_use_revoke(browser: playwright_sync.Browser, console_server: LiveServer) -> None:
    page = open_console(browser, console_server, ADMIN)
    page.wait_for_selector("#deployments")
    assert MODEL in page.inner_text("#deployments")
    page.click("button[data-tab=keys]")
    page.wait_for_selector("#new-key-form")
    page.fill("#key-name", "from the browser")
    page.click("#new-key-form button[type=submit]")
    page.wait_for_selector("#new-key-secret")
    secret = page.inner_text("#new-key-secret").strip()
    assert secret.startswith("alz-")
    page.click("#new-key button")  # "I have copied it"
    assert page.query_selector("#new-key-secret") is None
    page.click("button[data-tab=keys]")
    page.wait_for_selector("#keys")
    assert secret not in page.content()  # shown once: the listing has only its prefix
    assert chat(console_server, secret).status_code == 200
    row = page.locator("#keys tr", has_text="from the browser")
    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Confirm revoke").click()
    page.wait_for_selector("#keys tr:has-text('from the browser') >> text=revoked")
    refused = chat(console_server, secret)
    assert refused.status_code == 401, refused.text
    page.context.close()


def test_the_usage_chart_changes_after_new_traffic(
    browser: playwright_sync.Browser, console_server: LiveServer
) -> None:
    key = admin_call(console_server, "POST", "/admin/api/keys", {"name": "traffic"}).json()["key"]
    page = open_console(browser, console_server, ADMIN)
    page.wait_for_selector("#deployments")
    page.click("button[data-tab=usage]")
    page.wait_for_selector("svg.chart")
    before = int(page.get_attribute("svg.chart", "data-total-tokens") or "0")
    reply = chat(console_server, key)
    assert reply.status_code == 200
    after = before
    for _ in range(20):  # the ledger row lands as the request settles, just after the reply
        page.click("button[data-tab=usage]")
        page.wait_for_selector("svg.chart")
        after = int(page.get_attribute("svg.chart", "data-total-tokens") or "0")
        if after > before:
            break
        page.wait_for_timeout(250)
    assert after - before == reply.json()["usage"]["total_tokens"]
    latency = page.locator("#latency tr", has_text=MODEL).inner_text()
    cells = latency.split("\t")
    assert int(cells[1]) >= 1 and all(c.strip().isdigit() for c in cells[2:]), latency  # ms figures
    with page.expect_download() as download:
        page.click("#usage-csv")
    assert download.value.suggested_filename == "usage-by-day.csv"
    page.context.close()


def test_hostile_names_are_text(browser: playwright_sync.Browser, console_server: LiveServer) -> None:
    project = admin_call(console_server, "POST", "/admin/api/projects", {"name": HOSTILE})
    assert project.status_code == 201, project.text
    key = admin_call(
        console_server, "POST", "/admin/api/keys", {"name": HOSTILE, "project_id": project.json()["id"]}
    )
    assert key.status_code == 201, key.text
    page = open_console(browser, console_server, ADMIN)
    page.wait_for_selector("#deployments")
    for tab, table in (("keys", "#keys"), ("projects", "#projects"), ("audit", "#audit")):
        page.click(f"button[data-tab={tab}]")
        page.wait_for_selector(table)
        ready(page)
        assert HOSTILE in page.inner_text(table) or json.dumps(HOSTILE)[1:-1] in page.inner_text(table)
        assert page.query_selector(f"{table} img") is None
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []  # type: ignore[attr-defined]
    page.context.close()


def test_a_batch_job_shows_its_progress(browser: playwright_sync.Browser, console_server: LiveServer) -> None:
    lines = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"Say {i}."}], "max_tokens": 4},
        }
        for i in range(3)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    uploaded = httpx.post(
        f"{console_server.url}/v1/files",
        files={"file": ("in.jsonl", data)},
        data={"purpose": "batch"},
        headers=auth,
        timeout=30,
    )
    assert uploaded.status_code == 200, uploaded.text
    batch = httpx.post(
        f"{console_server.url}/v1/batches",
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        headers=auth,
        timeout=30,
    )
    assert batch.status_code == 200, batch.text
    page = open_console(browser, console_server, ADMIN)
    page.wait_for_selector("#deployments")
    page.click("button[data-tab=jobs]")
    row = page.locator("#batches tr", has_text=batch.json()["id"])
    row.wait_for()
    row.filter(has_text="completed").wait_for(timeout=180_000)  # the table refreshes every 5 s
    assert "3 / 3" in row.inner_text()
    page.context.close()
