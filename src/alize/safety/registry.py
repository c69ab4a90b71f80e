"""Content classifiers by name: a :class:`~alize.plugins.Registry` over the ``alize.moderators``
entry-point group.

The built-in one (``alize``: the shipped learned classifier + PII detectors) registers exactly as
a third-party classifier would (DESIGN rule 10): an entry point naming a factory that takes the
optional weights path from ``Settings.safety`` and returns a :class:`~alize.safety.moderator.Moderator`
(typically built over its own classifier object with ``heads`` and ``score_dicts``). Nothing is
imported until the server builds its services, and nothing heavy is loaded until first use.
"""

from __future__ import annotations

from pathlib import Path

from alize.plugins import PluginNotFoundError, Registry
from alize.safety.moderator import Moderator

GROUP = "alize.moderators"


def moderator_registry() -> Registry[Moderator]:
    return Registry[Moderator](GROUP, Moderator, what="content classifier")


def installed_moderators() -> list[str]:
    return moderator_registry().names


def load_moderator(name: str, *, weights_path: Path | None = None) -> Moderator:
    """The moderator registered as ``name``; a clear error (``ValueError``) when none is."""
    try:
        return moderator_registry().build(name, weights_path)
    except PluginNotFoundError as exc:
        raise ValueError(str(exc)) from None
