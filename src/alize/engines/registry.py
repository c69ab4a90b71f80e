"""Engines by kind. Built-ins register through the ``alize.engines`` entry-point group exactly as
third-party engines would, so adding one is one new module plus one line of packaging."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from alize.engines.base import Engine, EngineConfig
from alize.errors import InvalidRequestError

EngineFactory = Callable[[EngineConfig], Engine]


class EngineRegistry:
    def __init__(self, *, load_entry_points: bool = True) -> None:
        self._factories: dict[str, EngineFactory] = {}
        if load_entry_points:
            for ep in entry_points(group="alize.engines"):
                self._factories.setdefault(ep.name, _lazy(ep.name, ep.load))

    def register(self, kind: str, factory: EngineFactory) -> None:
        self._factories[kind] = factory

    @property
    def kinds(self) -> list[str]:
        return sorted(self._factories)

    def create(self, config: EngineConfig) -> Engine:
        factory = self._factories.get(config.kind)
        if factory is None:
            raise InvalidRequestError(
                f"unknown engine kind '{config.kind}'; installed: {', '.join(self.kinds) or 'none'}",
                param="engine",
            )
        return factory(config)


def _lazy(name: str, load: Callable[[], object]) -> EngineFactory:
    """Import an engine's module only when a deployment first uses it (torch is heavy)."""

    def factory(config: EngineConfig) -> Engine:
        cls = load()
        if not callable(cls):
            raise InvalidRequestError(f"engine entry point '{name}' is not callable")
        engine = cls(config)
        if not isinstance(engine, Engine):
            raise InvalidRequestError(f"engine entry point '{name}' did not build an Engine")
        return engine

    return factory
