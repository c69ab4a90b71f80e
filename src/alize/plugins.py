"""One registry shape for everything Alizé lets a package plug in: engines, moderators (DESIGN
rule 10). A plugin is a factory named in an entry-point group; the built-ins register in
``pyproject.toml`` exactly as a third-party package would, so adding one is one new module and
one line of packaging, and no built-in gets a code path of its own.

:class:`Registry` reads its group once, loads a factory only when first asked for it (torch is
heavy), checks that what the factory builds is the kind of thing the group promises, and names
what is installed when asked for something that is not. Code and tests can also
:meth:`~Registry.register` a factory directly (the scripted test engine).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class PluginNotFoundError(LookupError):
    """No plugin of that name in the group; the message names the installed ones."""


class PluginTypeError(TypeError):
    """An entry point that is not callable, or a factory that built the wrong kind of thing."""


class Registry(Generic[T]):
    """Factories of ``product`` by name, from the entry-point ``group`` and :meth:`register`."""

    def __init__(self, group: str, product: type[Any], *, what: str, load_entry_points: bool = True) -> None:
        # ``type[Any]``: the product is often abstract (Engine), which ``type[T]`` refuses
        self.group = group
        self._product = product
        self._what = what
        self._factories: dict[str, Callable[..., Any]] = {}
        if load_entry_points:
            for ep in entry_points(group=group):
                self._factories.setdefault(ep.name, _lazy(f"{what} entry point '{ep.name}'", ep.load))

    def register(self, name: str, factory: Callable[..., T]) -> None:
        self._factories[name] = factory

    @property
    def names(self) -> list[str]:
        return sorted(self._factories)

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Build the plugin ``name``; :class:`PluginNotFoundError` if none, :class:`PluginTypeError`
        if its factory is not callable or builds something other than the group's product."""
        factory = self._factories.get(name)
        if factory is None:
            installed = ", ".join(self.names) or "none"
            raise PluginNotFoundError(f"no {self._what} named '{name}' is installed (installed: {installed})")
        built: T = factory(*args, **kwargs)
        if not isinstance(built, self._product):
            raise PluginTypeError(
                f"{self._what} entry point '{name}' did not build a {self._product.__name__}"
            )
        return built


def _lazy(label: str, load: Callable[[], object]) -> Callable[..., Any]:
    """Import the plugin's module on first use only."""

    def factory(*args: Any, **kwargs: Any) -> Any:
        target = load()
        if not callable(target):
            raise PluginTypeError(f"{label} is not callable")
        return target(*args, **kwargs)

    return factory
