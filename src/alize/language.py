"""Which language a text is written in: lingua's detector over the five languages Alizé speaks.

Used by the chat assistant (to tell the model which language to answer in) and by the content
classifier (to pick the English or the multilingual stage). The detector is built on first use
(not at import: building it and loading its models takes a second or two of CPU and tens of MB),
then shared. Short or ambiguous texts give ``None``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from lingua import LanguageDetector

#: ISO 639-1 codes of the languages told apart
LANGUAGES: Final[tuple[str, ...]] = ("en", "fr", "de", "es", "it")
#: characters read: enough to decide, and a bound on the cost of a long text
READ_CHARS = 2000


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
        language = self._build().detect_language_of(text[:READ_CHARS])
        if language is None:
            return None
        code = language.iso_code_639_1.name.lower()
        return code if code in LANGUAGES else None

    async def detect(self, text: str) -> str | None:
        return await asyncio.to_thread(self.detect_sync, text)
