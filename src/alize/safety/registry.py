"""Content classifiers by name, through the ``alize.moderators`` entry-point group.

The built-in one (``alize``: the shipped learned classifier + PII detectors) registers exactly as
a third-party classifier would (DESIGN rule 10): an entry point naming a factory that takes the
optional weights path from ``Settings.safety`` and returns a :class:`~alize.safety.moderator.Moderator`
(typically built over its own classifier object with ``heads`` and ``score_dicts``). Nothing is
imported until the server builds its services, and nothing heavy is loaded until first use.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from alize.safety.moderator import Moderator

GROUP = "alize.moderators"


def installed_moderators() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_moderator(name: str, *, weights_path: Path | None = None) -> Moderator:
    """The moderator registered as ``name``; a clear error when none is."""
    for ep in entry_points(group=GROUP):
        if ep.name != name:
            continue
        factory = ep.load()
        moderator = factory(weights_path)
        if not isinstance(moderator, Moderator):
            raise TypeError(f"moderator entry point '{name}' did not build a Moderator")
        return moderator
    installed = ", ".join(installed_moderators()) or "none"
    raise ValueError(f"no content classifier named '{name}' is installed (installed: {installed})")
