"""The moderation service object: texts or conversations in, per-category results out.

``Moderator`` is engine- and HTTP-neutral; the API layer renders its results with
:mod:`alize.safety.render`. It is built by :func:`create_moderator`, which loads nothing: the
classifier (the int8 ONNX MiniLM, the multilingual encoder and the language detector) is
constructed on first use under a lock, so importing or configuring Alizé never pays for it, and
concurrent first calls build it once. :func:`create_ngram_moderator` builds the previous
classifier (MiniLM's embedding layer and hashed n-grams, English only), a few times faster and
less accurate (docs/benchmarks.md).

Classification is thread-safe (the classifiers hold read-only weights and locked tokenizers)
and batched: texts are scored ``batch_size`` at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from alize.safety.categories import (
    HARM_CATEGORIES,
    MISTRAL_CATEGORIES,
    OPENAI_CATEGORIES,
    mistral_scores,
    openai_scores,
)
from alize.safety.pii import PiiSpan, detect, pii_score

if TYPE_CHECKING:
    from alize.safety.minilm import Parallelism

DEFAULT_THRESHOLD = 0.5


class Classifier(Protocol):
    """What a moderator needs of its classifier (see :mod:`alize.safety.categories` for heads)."""

    @property
    def heads(self) -> tuple[str, ...]: ...

    def scores(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Calibrated head scores, (len(texts), len(heads)); 0.5 is every head's threshold."""
        ...

    def score_dicts(self, texts: list[str]) -> list[dict[str, float]]: ...


#: Separator between messages when a conversation is shown as one transcript (for PII offsets).
TRANSCRIPT_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class ModerationResult:
    """Scores and decisions for one text or conversation.

    ``scores``/``categories`` use Mistral's nine names (the primary set); ``openai_scores`` /
    ``openai_categories`` use OpenAI's names with slashes. ``pii`` spans index into the text
    (for a conversation: into its messages joined with ``TRANSCRIPT_SEPARATOR``).
    """

    scores: dict[str, float]
    categories: dict[str, bool]
    openai_scores: dict[str, float]
    openai_categories: dict[str, bool]
    pii: tuple[PiiSpan, ...]

    @property
    def flagged(self) -> bool:
        """True when any Mistral category is over its threshold."""
        return any(self.categories.values())

    @property
    def harmful(self) -> bool:
        """True when a harm category (not an advice topic, not PII) is over its threshold."""
        return any(self.categories[name] for name in HARM_CATEGORIES)

    @property
    def openai_flagged(self) -> bool:
        return any(self.openai_categories.values())


def _check_thresholds(thresholds: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    unknown = set(thresholds) - set(names)
    if unknown:
        raise ValueError(f"unknown moderation categories: {sorted(unknown)}")
    if any(not 0.0 <= t <= 1.0 for t in thresholds.values()):
        raise ValueError("moderation thresholds must be within [0, 1]")
    return {name: float(thresholds.get(name, DEFAULT_THRESHOLD)) for name in names}


class Moderator:
    """Classifies texts and conversations. Construct with :func:`create_moderator`."""

    def __init__(
        self,
        classifier_factory: Callable[[], Classifier],
        *,
        thresholds: Mapping[str, float] | None = None,
        openai_thresholds: Mapping[str, float] | None = None,
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._factory = classifier_factory
        self._classifier: Classifier | None = None
        self._lock = threading.Lock()
        self.thresholds = _check_thresholds(thresholds or {}, MISTRAL_CATEGORIES)
        self.openai_thresholds = _check_thresholds(openai_thresholds or {}, OPENAI_CATEGORIES)
        self.batch_size = batch_size

    @property
    def classifier(self) -> Classifier:
        """The classifier, built on first access (once, even under concurrent first calls)."""
        classifier = self._classifier
        if classifier is None:
            with self._lock:
                if self._classifier is None:
                    self._classifier = self._factory()
                classifier = self._classifier
        return classifier

    def warm_up(self) -> None:
        """Build the classifier now (e.g. at startup) rather than on the first request."""
        self.classify(["warm up"])

    def classify(self, texts: list[str]) -> list[ModerationResult]:
        """One result per text, in order."""
        results: list[ModerationResult] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            heads = self.classifier.score_dicts(batch)
            results.extend(self._result(h, tuple(detect(text))) for h, text in zip(heads, batch, strict=True))
        return results

    def classify_conversations(self, conversations: list[list[str]]) -> list[ModerationResult]:
        """One result per conversation (a list of message texts).

        Every message is scored on its own and the conversation takes the maximum per head,
        so a harmful turn is not diluted by a long benign history.
        """
        flat = [message for conversation in conversations for message in conversation]
        per_message: list[dict[str, float]] = []
        for start in range(0, len(flat), self.batch_size):
            per_message.extend(self.classifier.score_dicts(flat[start : start + self.batch_size]))
        results: list[ModerationResult] = []
        cursor = 0
        for conversation in conversations:
            scored = per_message[cursor : cursor + len(conversation)]
            cursor += len(conversation)
            heads = {h: max((s[h] for s in scored), default=0.0) for h in self.classifier.heads}
            results.append(self._result(heads, tuple(_transcript_spans(conversation))))
        return results

    def _result(self, heads: Mapping[str, float], spans: tuple[PiiSpan, ...]) -> ModerationResult:
        scores = mistral_scores(heads, pii_score(list(spans)))
        oa_scores = openai_scores(heads)
        return ModerationResult(
            scores=scores,
            categories={name: scores[name] >= self.thresholds[name] for name in MISTRAL_CATEGORIES},
            openai_scores=oa_scores,
            openai_categories={
                name: oa_scores[name] >= self.openai_thresholds[name] for name in OPENAI_CATEGORIES
            },
            pii=spans,
        )


def _transcript_spans(messages: list[str]) -> list[PiiSpan]:
    spans: list[PiiSpan] = []
    offset = 0
    for message in messages:
        for s in detect(message):
            spans.append(PiiSpan(s.start + offset, s.end + offset, s.kind, s.text, s.subtype))
        offset += len(message) + len(TRANSCRIPT_SEPARATOR)
    return spans


def _staged(model_dir: Path | None, threads: int, spinning: bool, parallel: Parallelism) -> Classifier:
    from alize.language import LanguageGuesser
    from alize.safety.minilm import MiniLMClassifier
    from alize.safety.multilingual import MultilingualClassifier
    from alize.safety.staged import StagedClassifier

    return StagedClassifier(
        MiniLMClassifier(model_dir, threads=threads, spinning=spinning, parallel=parallel),
        MultilingualClassifier(),
        LanguageGuesser().detect_sync,
    )


def _ngram(weights_path: Path | None) -> Classifier:
    from alize.safety.classifier import ContentClassifier

    return ContentClassifier.from_path(weights_path)


def create_moderator(
    weights_path: Path | None = None,
    *,
    thresholds: Mapping[str, float] | None = None,
    openai_thresholds: Mapping[str, float] | None = None,
    batch_size: int = 32,
    threads: int = 2,
    spinning: bool = False,
    parallel: Parallelism = "windows",
) -> Moderator:
    """The shipped moderator (:mod:`alize.safety.staged`), loaded on first use.

    ``weights_path`` is a directory holding the English stage's ``model.onnx``, ``meta.json``
    and ``tokenizer.json`` (default: the ones shipped in the package); ``threads``,
    ``spinning`` and ``parallel`` are the English stage's threads per call, whether
    onnxruntime's threads spin-wait, and whether the threads share a call's windows or each
    window's operators (:class:`alize.safety.minilm.MiniLMClassifier`).
    """
    return Moderator(
        lambda: _staged(weights_path, threads, spinning, parallel),
        thresholds=thresholds,
        openai_thresholds=openai_thresholds,
        batch_size=batch_size,
    )


def create_ngram_moderator(
    weights_path: Path | None = None,
    *,
    thresholds: Mapping[str, float] | None = None,
    openai_thresholds: Mapping[str, float] | None = None,
    batch_size: int = 32,
) -> Moderator:
    """The previous classifier (:mod:`alize.safety.classifier`, an ``.npz``), English only."""
    return Moderator(
        lambda: _ngram(weights_path),
        thresholds=thresholds,
        openai_thresholds=openai_thresholds,
        batch_size=batch_size,
    )
