"""Engines by kind: a :class:`~alize.plugins.Registry` over the ``alize.engines`` entry-point
group, where the built-ins (llamacpp, torch, remote) register exactly as third-party engines
would. An unknown kind or a broken plugin is the deployment's error (400, ``param=engine``)."""

from __future__ import annotations

from alize.engines.base import Engine, EngineConfig
from alize.errors import InvalidRequestError
from alize.plugins import PluginNotFoundError, PluginTypeError, Registry

GROUP = "alize.engines"


class EngineRegistry(Registry[Engine]):
    def __init__(self, *, load_entry_points: bool = True) -> None:
        super().__init__(GROUP, Engine, what="engine", load_entry_points=load_entry_points)

    @property
    def kinds(self) -> list[str]:
        return self.names

    def create(self, config: EngineConfig) -> Engine:
        """The engine for ``config.kind``, built over ``config``."""
        try:
            return self.build(config.kind, config)
        except PluginNotFoundError:
            installed = ", ".join(self.kinds) or "none"
            raise InvalidRequestError(
                f"unknown engine kind '{config.kind}'; installed: {installed}", param="engine"
            ) from None
        except PluginTypeError as exc:
            raise InvalidRequestError(str(exc), param="engine") from None
