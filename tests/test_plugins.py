"""One registry shape for engines and moderators (DESIGN rule 10)."""

from __future__ import annotations

import pytest

from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry
from alize.errors import InvalidRequestError
from alize.plugins import PluginNotFoundError, PluginTypeError, Registry
from alize.safety.registry import installed_moderators, moderator_registry


class Thing:
    def __init__(self, size: int = 1) -> None:
        self.size = size


def test_registered_factories_build_with_their_arguments() -> None:
    registry = Registry("alize.none", Thing, what="thing", load_entry_points=False)
    registry.register("b", Thing)
    registry.register("a", lambda: Thing(7))
    assert registry.names == ["a", "b"]
    assert registry.build("b", 3).size == 3
    assert registry.build("a").size == 7


def test_unknown_name_lists_what_is_installed() -> None:
    registry = Registry("alize.none", Thing, what="thing", load_entry_points=False)
    registry.register("only", Thing)
    with pytest.raises(PluginNotFoundError, match=r"no thing named 'x' is installed \(installed: only\)"):
        registry.build("x")


def test_a_factory_building_the_wrong_product_is_refused() -> None:
    registry = Registry("alize.none", Thing, what="thing", load_entry_points=False)
    registry.register("bad", lambda: "not a thing")  # type: ignore[arg-type,return-value]
    with pytest.raises(PluginTypeError, match="thing entry point 'bad' did not build a Thing"):
        registry.build("bad")


def test_engines_and_moderators_come_from_their_entry_point_groups() -> None:
    assert {"llamacpp", "torch", "remote"} <= set(EngineRegistry().kinds)
    assert "alize" in installed_moderators() == moderator_registry().names


def test_engine_registry_errors_are_the_deployments() -> None:
    registry = EngineRegistry(load_entry_points=False)
    with pytest.raises(InvalidRequestError, match="unknown engine kind 'nope'; installed: none") as err:
        registry.create(EngineConfig(kind="nope"))
    assert err.value.param == "engine"
    registry.register("wrong", lambda config: object())  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidRequestError, match="did not build a Engine"):
        registry.create(EngineConfig(kind="wrong"))
