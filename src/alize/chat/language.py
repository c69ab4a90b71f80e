"""Which language a message is written in, so the assistant can be told to answer in it.

lingua's detector, restricted to the five interface languages, is built once per app on first
use (not at import: building it and loading its models takes a second or two of CPU and tens
of MB), then shared. Detection runs in a worker thread. Short or ambiguous texts give ``None``
and the caller falls back to the interface language.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lingua import LanguageDetector

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


class LanguageGuesser:
    def __init__(self, minimum_relative_distance: float = 0.1) -> None:
        self._distance = minimum_relative_distance
        self._detector: LanguageDetector | None = None
        self._lock = threading.Lock()

    def _build(self) -> LanguageDetector:
        with self._lock:
            if self._detector is None:
                from lingua import Language, LanguageDetectorBuilder

                self._detector = (
                    LanguageDetectorBuilder.from_languages(
                        Language.ENGLISH, Language.FRENCH, Language.GERMAN, Language.SPANISH, Language.ITALIAN
                    )
                    .with_minimum_relative_distance(self._distance)
                    .build()
                )
            return self._detector

    def detect_sync(self, text: str) -> str | None:
        """``"en"``, ``"fr"``, ``"de"``, ``"es"``, ``"it"`` or None when unsure."""
        if len(text.strip()) < 3:
            return None
        language = self._build().detect_language_of(text[:2000])
        if language is None:
            return None
        code = language.iso_code_639_1.name.lower()
        return code if code in ANSWER_IN else None

    async def detect(self, text: str) -> str | None:
        return await asyncio.to_thread(self.detect_sync, text)
