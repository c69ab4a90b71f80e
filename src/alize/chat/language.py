"""Which language a message is written in, so the assistant can be told to answer in it.

The detector itself lives in :mod:`alize.language` (the content classifier uses it too); this
module adds what the assistant says once the language is known.
"""

from __future__ import annotations

from alize.language import LanguageGuesser

__all__ = ["ANSWER_IN", "LanguageGuesser"]

#: ISO 639-1 code → the instruction added to the system prompt. Said in English and again in the
#: language itself: small models follow an instruction written in the language they must use
#: more often than one about it (see the language figures in docs/benchmarks.md).
ANSWER_IN = {
    "en": "Answer in English.",
    "fr": "Answer in French, the language of the user's message. Réponds en français.",
    "de": "Answer in German, the language of the user's message. Antworte auf Deutsch.",
    "es": "Answer in Spanish, the language of the user's message. Responde en español.",
    "it": "Answer in Italian, the language of the user's message. Rispondi in italiano.",
}
