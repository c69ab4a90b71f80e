"""Moderation categories: Mistral's nine are primary; OpenAI's names are derived from the same heads.

The classifier has one learned *head* per label it was trained on. Heads are named after the dev
set's OpenAI codes (``S``, ``H``, ``V``, ``HR``, ``SH``, ``S3``, ``H2``, ``V2``) plus four heads
learned from Alizé's own examples for Mistral categories the dev set does not cover
(``dangerous``, ``health``, ``financial``, ``law``), and a gate head ``any`` ("flagged for
anything") that no category reads directly (see :mod:`alize.safety.classifier`). PII has no
head: its score comes from the checksum-verified detectors in :mod:`alize.safety.pii`.

A category's score is the maximum over its heads (a text is as hateful as its most hateful
reading). Head scores are calibrated so that 0.5 is each head's decision threshold, which makes
taking the maximum across heads meaningful.

Mistral category                  heads              OpenAI category          heads
================================  =================  =======================  ===================
sexual                            S, S3              sexual                   S
hate_and_discrimination           H, H2, HR          sexual/minors            S3
violence_and_threats              V, V2, H2          hate                     H
dangerous_and_criminal_content    dangerous          hate/threatening         H2
selfharm                          SH                 harassment               HR
health                            health             harassment/threatening   min(HR, max(V, H2))
financial                         financial          violence                 V
law                               law                violence/graphic         V2
pii                               (PII detectors)    self-harm                SH
                                                     self-harm/intent         SH
                                                     self-harm/instructions   min(SH, dangerous)
                                                     illicit                  dangerous
                                                     illicit/violent          min(dangerous, V)

Harassment maps to ``hate_and_discrimination`` because Mistral folds abuse aimed at people into
that category; hate/threatening feeds both hate and violence because it is both. The OpenAI
categories without a dedicated label (``*/threatening``, ``self-harm/*``, ``illicit*``) are
conservative combinations of heads, documented here rather than invented as new models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

#: Heads learned from the dev set (OpenAI's short codes).
DEV_HEADS: Final[tuple[str, ...]] = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")
#: Heads learned from Alizé's own examples (``safety/data/extra.jsonl``).
EXTRA_HEADS: Final[tuple[str, ...]] = ("dangerous", "health", "financial", "law")
HEADS: Final[tuple[str, ...]] = DEV_HEADS + EXTRA_HEADS + ("any",)

MISTRAL_CATEGORIES: Final[tuple[str, ...]] = (
    "sexual",
    "hate_and_discrimination",
    "violence_and_threats",
    "dangerous_and_criminal_content",
    "selfharm",
    "health",
    "financial",
    "law",
    "pii",
)

#: Mistral categories that are harm (blocked by default); the others are advice topics or PII.
HARM_CATEGORIES: Final[tuple[str, ...]] = (
    "sexual",
    "hate_and_discrimination",
    "violence_and_threats",
    "dangerous_and_criminal_content",
    "selfharm",
)

#: Mistral category -> heads whose maximum is its score ("pii" is filled from the detectors).
MISTRAL_HEADS: Final[Mapping[str, tuple[str, ...]]] = {
    "sexual": ("S", "S3"),
    "hate_and_discrimination": ("H", "H2", "HR"),
    "violence_and_threats": ("V", "V2", "H2"),
    "dangerous_and_criminal_content": ("dangerous",),
    "selfharm": ("SH",),
    "health": ("health",),
    "financial": ("financial",),
    "law": ("law",),
    "pii": (),
}

OPENAI_CATEGORIES: Final[tuple[str, ...]] = (
    "sexual",
    "sexual/minors",
    "hate",
    "hate/threatening",
    "harassment",
    "harassment/threatening",
    "violence",
    "violence/graphic",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "illicit",
    "illicit/violent",
)

#: OpenAI category -> the dev-set code it is trained on (the eight with labels).
OPENAI_TO_HEAD: Final[Mapping[str, str]] = {
    "sexual": "S",
    "sexual/minors": "S3",
    "hate": "H",
    "hate/threatening": "H2",
    "harassment": "HR",
    "violence": "V",
    "violence/graphic": "V2",
    "self-harm": "SH",
    "self-harm/intent": "SH",
    "illicit": "dangerous",
}


def mistral_scores(heads: Mapping[str, float], pii_score: float) -> dict[str, float]:
    """Mistral category scores from calibrated head scores (and the PII detector score)."""
    scores = {name: max((heads[h] for h in members), default=0.0) for name, members in MISTRAL_HEADS.items()}
    scores["pii"] = pii_score
    return scores


def openai_scores(heads: Mapping[str, float]) -> dict[str, float]:
    """OpenAI category scores (names with slashes) from calibrated head scores."""
    scores = {name: heads[head] for name, head in OPENAI_TO_HEAD.items()}
    scores["harassment/threatening"] = min(heads["HR"], max(heads["V"], heads["H2"]))
    scores["self-harm/instructions"] = min(heads["SH"], heads["dangerous"])
    scores["illicit/violent"] = min(heads["dangerous"], heads["V"])
    return {name: scores[name] for name in OPENAI_CATEGORIES}
