"""Skips for what ``make test`` installs (model packages, Chromium, Playwright, xllamacpp,
sentence-transformers) become failures under ``ALIZE_TEST_REQUIRE_ALL=1``, which ``make test``
sets: a suite that silently skipped its browser or model tests would report green untested.
Skips for what ``make test`` does not provide (an external pack index) stay plain skips."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, NoReturn

import pytest

from alize.catalog.sources import ModelSourceUnavailableError, package_dir


def strict() -> bool:
    return os.environ.get("ALIZE_TEST_REQUIRE_ALL", "") not in ("", "0", "false")


def missing(reason: str) -> NoReturn:
    """Skip (or, under ``make test``, fail) because something ``make test`` installs is missing."""
    if strict():
        pytest.fail(f"{reason}; make test installs it (ALIZE_TEST_REQUIRE_ALL=1)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def import_or_missing(module: str) -> ModuleType:
    """``pytest.importorskip`` that fails under ``make test``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        missing(f"{module} is not importable")


def package_installed(package: str) -> bool:
    try:
        package_dir(package)
    except ModelSourceUnavailableError:
        return False
    return True


def needs_package(package: str) -> Any:
    """A marker: skip without ``package`` (a model wheel), but never under ``make test``, where
    the test then runs and fails on the missing files."""
    return pytest.mark.skipif(
        not strict() and not package_installed(package), reason=f"{package} not installed"
    )
