"""Every package and top-level module of Alizé sits in an import-linter contract (DESIGN rule 1),
and no contract lists exceptions: a new module outside them fails here, not in review."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "alize"


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _covered() -> set[str]:
    names: set[str] = set()
    for contract in _contracts():
        for key in ("layers", "source_modules"):
            for entry in contract.get(key, []):  # type: ignore[attr-defined]
                names.update(part.strip() for part in str(entry).split("|"))
    return names


def test_every_package_and_module_is_in_a_contract() -> None:
    modules = {
        f"alize.{p.stem}"
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")
    }
    assert modules - _covered() == set()


def test_no_contract_lists_exceptions() -> None:
    for contract in _contracts():
        assert "ignore_imports" not in contract, contract["name"]
