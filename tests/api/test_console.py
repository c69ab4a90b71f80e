"""The admin console's shell and assets: served without a key (they hold no data) under the
chat page's strict Content-Security-Policy, while its API stays admin-only; no path escapes."""

from __future__ import annotations

from pathlib import Path

from tests.observability.test_metrics import ADMIN, settings
from tests.support.apps import scripted_app

from alize.api.console import STATIC


def test_the_shell_and_assets_need_no_key_but_the_api_does(tmp_path: Path) -> None:
    with scripted_app(settings(tmp_path, admin_key=ADMIN)) as client:
        page = client.get("/admin")
        assert page.status_code == 200 and "console.js" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        for asset in (
            "js/console.js",
            "js/api.js",
            "js/chart.js",
            "js/latency.js",
            "js/dom.js",
            "console.css",
        ):
            r = client.get(f"/admin/console/{asset}")
            assert r.status_code == 200, asset
        assert client.get("/admin/api/keys").status_code == 401
        assert client.get("/admin/anything-else").status_code == 401


def test_no_path_leaves_the_console_folder(tmp_path: Path) -> None:
    with scripted_app(settings(tmp_path, admin_key=ADMIN)) as client:
        for path in (
            "../__init__.py",
            "..%2f__init__.py",
            "js/../../__init__.py",
            "%2e%2e/pages.py",
            "nope.js",
        ):
            r = client.get(f"/admin/console/{path}")
            # 404, or 401 where the client normalised the dots away into a protected path
            assert r.status_code in (401, 404) and "__future__" not in r.text, path


def test_no_script_builds_markup_from_strings() -> None:
    for script in (STATIC / "js").glob("*.js"):
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{script.name} uses {sink}"
