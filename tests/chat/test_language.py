"""The assistant is told to answer in the language of the user's message (chat/language.py),
falling back to the interface language when the message is too short or ambiguous to tell."""

from __future__ import annotations

import pytest

from alize.chat.language import ANSWER_IN, LanguageGuesser
from alize.chat.prompting import system_prompt

GUESSER = LanguageGuesser()


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Could you explain how a heat pump works in winter?", "en"),
        ("Peux-tu m'expliquer comment fonctionne une pompe à chaleur en hiver ?", "fr"),
        ("Kannst du mir erklären, wie eine Wärmepumpe im Winter funktioniert?", "de"),
        ("¿Puedes explicarme cómo funciona una bomba de calor en invierno?", "es"),
        ("Puoi spiegarmi come funziona una pompa di calore in inverno?", "it"),
    ],
)
async def test_each_interface_language_is_recognised(text: str, language: str) -> None:
    assert await GUESSER.detect(text) == language
    assert ANSWER_IN[language] in system_prompt("Be helpful.", await GUESSER.detect(text), [])


@pytest.mark.parametrize("text", ["", "ok", "  "])
def test_too_short_to_tell_is_none(text: str) -> None:
    assert GUESSER.detect_sync(text) is None


def test_the_prompt_asks_for_the_language_said_in_it_and_none_without_one() -> None:
    prompt = system_prompt("Be helpful.", "fr", [])
    assert prompt == "Be helpful.\n\n" + ANSWER_IN["fr"] and "Réponds en français." in prompt
    assert system_prompt("Be helpful.", None, []) == "Be helpful."
    assert system_prompt("", "xx", []) == ""
