"""The built-in classifier is found through the entry-point group, like a third-party one."""

from __future__ import annotations

import pytest

from alize.safety.moderator import Moderator
from alize.safety.registry import installed_moderators, load_moderator


def test_the_builtin_classifier_registers_through_entry_points() -> None:
    assert "alize" in installed_moderators()
    moderator = load_moderator("alize")
    assert isinstance(moderator, Moderator)
    assert moderator.classify(["The market opens at nine."])[0].flagged is False


def test_an_unknown_classifier_is_a_clear_error() -> None:
    expected = r"no content classifier named 'nope' is installed \(installed: .*alize"
    with pytest.raises(ValueError, match=expected):
        load_moderator("nope")
