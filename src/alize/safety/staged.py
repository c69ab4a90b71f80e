"""The shipped classifier: the language of each text decides which stage judges it.

* English → the English stage (:mod:`alize.safety.minilm`, fine-tuned MiniLM, int8 ONNX);
* French, German, Spanish or Italian → the multilingual stage (:mod:`alize.safety.multilingual`,
  USE multilingual v3), since MiniLM's English vocabulary cannot read them;
* undetermined (too short or ambiguous for :class:`alize.language.LanguageGuesser`) → both, and
  the text takes the higher score per head: a short text in another language may be harmful,
  and an English one is still read by the stage trained for it.

Both stages expose calibrated head scores on the same scale (0.5 = the stage's own threshold),
so their maxima and the categories built on them mean the same thing whichever stage ran.
Texts of one batch are grouped by stage, so each stage runs once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Stage = Literal["english", "multilingual", "both"]


class HeadScorer(Protocol):
    """What the moderator needs of a classifier: its heads, and calibrated scores per text."""

    @property
    def heads(self) -> tuple[str, ...]: ...

    def scores(self, texts: Sequence[str]) -> F32: ...


def stage_of(language: str | None) -> Stage:
    if language == "en":
        return "english"
    return "both" if language is None else "multilingual"


class StagedClassifier:
    """Routes each text to the stage its language calls for. Thread-safe if both stages are."""

    def __init__(
        self, english: HeadScorer, multilingual: HeadScorer, language: Callable[[str], str | None]
    ) -> None:
        if tuple(english.heads) != tuple(multilingual.heads):
            raise ValueError("the two stages must have the same heads")
        self.english = english
        self.multilingual = multilingual
        self._language = language

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.english.heads)

    def stages(self, texts: Sequence[str]) -> list[Stage]:
        return [stage_of(self._language(text)) for text in texts]

    def scores(self, texts: Sequence[str]) -> F32:
        out = np.zeros((len(texts), len(self.heads)), dtype=np.float32)
        stages = self.stages(texts)
        for scorer, wanted in ((self.english, "english"), (self.multilingual, "multilingual")):
            rows = [i for i, s in enumerate(stages) if s in (wanted, "both")]
            if rows:
                out[rows] = np.maximum(out[rows], scorer.scores([texts[i] for i in rows]))
        return out

    def score_dicts(self, texts: list[str]) -> list[dict[str, float]]:
        return [
            {head: float(v) for head, v in zip(self.heads, row, strict=True)} for row in self.scores(texts)
        ]
