"""The suite itself: a run leaves tracked files alone, and `make test` skips nothing it installs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _pytest.outcomes import Failed, Skipped
from tests.support import installed

ROOT = Path(__file__).resolve().parent.parent


def test_screenshots_go_to_docs_only_when_asked() -> None:
    """Every ``.screenshot(path=...)`` writes into a folder chosen by ``ALIZE_UPDATE_SCREENSHOTS``
    (docs/images only when it is 1), so ``git status`` is clean after ``make test``."""
    for test in sorted((ROOT / "tests").rglob("test_*.py")):
        text = test.read_text()
        for target in re.findall(r"\.screenshot\(path=str\(([^)]*)\)", text):
            assert "IMAGES" not in target, f"{test.relative_to(ROOT)} writes a screenshot into docs: {target}"
        if ".screenshot(" in text:
            assert 'os.environ.get("ALIZE_UPDATE_SCREENSHOTS") == "1"' in text, test


def test_make_test_turns_a_missing_install_into_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIZE_TEST_REQUIRE_ALL", "1")
    with pytest.raises(Failed, match="make test installs it"):
        installed.import_or_missing("alize_no_such_module")
    assert installed.needs_package("no-such-model-package").args[0] is False  # never skipped
    monkeypatch.setenv("ALIZE_TEST_REQUIRE_ALL", "0")
    with pytest.raises(Skipped):
        installed.import_or_missing("alize_no_such_module")
    assert installed.needs_package("no-such-model-package").args[0] is True
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "ALIZE_TEST_REQUIRE_ALL=1" in test_recipe
