"""Content-safety policies of a deployment, as data, and the decision they make on a result.

A deployment may filter its **input** (the prompt, before the model sees it) and its **output**
(the generated text, checked in windows while it streams). Each direction has one
:class:`FilterPolicy`:

* a rule per Mistral category (``threshold`` on the calibrated score, ``action``):
  ``block`` refuses the prompt (400 ``content_filter``) or stops the output
  (``finish_reason: "content_filter"``); ``annotate`` lets it through and reports the category
  as detected in ``content_filter_results``; ``off`` ignores the category;
* ``pii``: ``off``, ``annotate``, ``redact`` (e-mail addresses, phone numbers... replaced by
  ``[EMAIL]``, ``[PHONE]``... before the model or the client sees them) or ``block``;
* ``on_error``: what happens when the classifier fails or times out. ``block`` (the default)
  fails closed; ``allow`` lets the text through; either way the response says so.

Categories a policy does not name take :data:`DEFAULT_RULES`, and a rule without a threshold
takes the threshold of the policy's ``preset``: the five harm categories block, the three
advice categories (health, financial, law) are only annotated, since answering a health
question is the assistant's job, not a violation. Scores are calibrated so that 0.5 is the
classifier's own decision threshold (``balanced``, the default); ``strict`` (0.35) filters
more, ``lenient`` (0.65) less. Each preset's false-positive rate, measured on held-out data, is
in docs/safety.md and in the shipped model's ``meta.json``.

This module is pure data and logic (no I/O, no HTTP): the gateway runs the classifier and asks
:func:`decide` what to do with its result; the API layer renders :class:`FilterReport`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alize.safety.categories import HARM_CATEGORIES, MISTRAL_CATEGORIES

Action = Literal["off", "annotate", "block"]
PiiAction = Literal["off", "annotate", "redact", "block"]
OnError = Literal["block", "allow"]
Preset = Literal["strict", "balanced", "lenient"]

#: the calibrated score at which a preset's categories apply (a rule's own threshold wins)
PRESETS: Mapping[str, float] = {"strict": 0.35, "balanced": 0.5, "lenient": 0.65}

#: categories a rule may name (``pii`` has its own field, since it can also redact)
RULE_CATEGORIES: tuple[str, ...] = tuple(c for c in MISTRAL_CATEGORIES if c != "pii")


class CategoryRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action = Field("block", description="what a score at or over the threshold does")
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="calibrated score at which it applies; empty = the preset's"
    )


DEFAULT_RULES: Mapping[str, CategoryRule] = {
    name: CategoryRule(action="block" if name in HARM_CATEGORIES else "annotate") for name in RULE_CATEGORIES
}


class FilterPolicy(BaseModel):
    """The filter of one direction (input or output) of a deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    categories: dict[str, CategoryRule] = Field(
        default_factory=dict, description="rules by Mistral category; unnamed ones take the defaults"
    )
    preset: Preset = Field(
        "balanced",
        description="threshold of the categories not named: strict 0.35, balanced 0.5, lenient 0.65",
    )
    pii: PiiAction = Field("off", description="what detected PII does")
    on_error: OnError = Field("block", description="when the classifier fails: block (fail closed) or allow")

    @field_validator("categories")
    @classmethod
    def _known(cls, v: dict[str, CategoryRule]) -> dict[str, CategoryRule]:
        unknown = sorted(set(v) - set(RULE_CATEGORIES))
        if unknown:
            raise ValueError(
                f"unknown categories {unknown}; known: {', '.join(RULE_CATEGORIES)} (PII is set by 'pii')"
            )
        return v

    def rule(self, category: str) -> CategoryRule:
        """The category's rule with its threshold filled in (its own, else the preset's)."""
        rule = self.categories.get(category) or DEFAULT_RULES[category]
        if rule.threshold is not None:
            return rule
        return CategoryRule(action=rule.action, threshold=PRESETS[self.preset])

    @property
    def redacts(self) -> bool:
        return self.pii == "redact"


class SafetyPolicy(BaseModel):
    """A deployment's content filters; a direction left empty is not filtered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: FilterPolicy | None = Field(None, description="checks the prompt before the model sees it")
    output: FilterPolicy | None = Field(None, description="checks the generated text while it streams")
    window_tokens: int = Field(
        16,
        ge=1,
        le=512,
        description=(
            "output is checked every this many tokens and released only once checked, so a "
            "flagged passage is cut within this many tokens and none of its window is sent"
        ),
    )


Severity = Literal["safe", "low", "medium", "high"]


def severity(score: float) -> Severity:
    """Azure-style bands over the calibrated score (0.5 = the classifier's decision threshold)."""
    if score < 0.25:
        return "safe"
    if score < 0.5:
        return "low"
    if score < 0.75:
        return "medium"
    return "high"


@dataclass(frozen=True, slots=True)
class CategoryVerdict:
    score: float
    #: the score reached the rule's threshold (and the rule is not ``off``)
    detected: bool
    #: the text was refused or cut because of this category
    filtered: bool


@dataclass(frozen=True, slots=True)
class PiiVerdict:
    #: the kinds of identifier found (empty when none, or when the policy ignores PII)
    kinds: tuple[str, ...]
    filtered: bool
    redacted: bool

    @property
    def detected(self) -> bool:
        return bool(self.kinds)


@dataclass(frozen=True, slots=True)
class FilterReport:
    """What a filter found; the API renders it as Azure-style ``content_filter_results``.

    ``error`` is set when the classifier failed; the text is then blocked exactly when the
    policy fails closed (``on_error: block``), and no category was scored.
    """

    categories: dict[str, CategoryVerdict] = field(default_factory=dict)
    pii: PiiVerdict | None = None
    error: str | None = None
    failed_closed: bool = False

    @property
    def blocked(self) -> bool:
        return self.failed_closed or bool(self.blocked_by)

    @property
    def blocked_by(self) -> list[str]:
        names = [name for name, v in self.categories.items() if v.filtered]
        if self.pii is not None and self.pii.filtered:
            names.append("pii")
        return names


def decide(policy: FilterPolicy, scores: Mapping[str, float], pii_kinds: tuple[str, ...]) -> FilterReport:
    """Apply ``policy`` to Mistral category ``scores`` and the PII kinds found in the text."""
    categories: dict[str, CategoryVerdict] = {}
    for name in RULE_CATEGORIES:
        rule = policy.rule(name)
        score = float(scores.get(name, 0.0))
        detected = rule.action != "off" and rule.threshold is not None and score >= rule.threshold
        categories[name] = CategoryVerdict(score, detected, detected and rule.action == "block")
    found = bool(pii_kinds) and policy.pii != "off"
    pii = PiiVerdict(
        kinds=tuple(sorted(set(pii_kinds))) if found else (),
        filtered=found and policy.pii == "block",
        redacted=found and policy.pii == "redact",
    )
    return FilterReport(categories, pii)


def _merge_category(a: CategoryVerdict, b: CategoryVerdict | None) -> CategoryVerdict:
    if b is None:
        return a
    return CategoryVerdict(max(a.score, b.score), a.detected or b.detected, a.filtered or b.filtered)


def _merge_pii(a: PiiVerdict | None, b: PiiVerdict | None) -> PiiVerdict | None:
    if a is None or b is None:
        return a or b
    return PiiVerdict(
        tuple(sorted(set(a.kinds) | set(b.kinds))),
        a.filtered or b.filtered,
        a.redacted or b.redacted,
    )


def merge(first: FilterReport | None, second: FilterReport) -> FilterReport:
    """The report of a whole text checked in windows: the highest score and every flag seen."""
    if first is None:
        return second
    names = list(first.categories) + [n for n in second.categories if n not in first.categories]
    categories = {
        name: _merge_category(first.categories[name], second.categories.get(name))
        if name in first.categories
        else second.categories[name]
        for name in names
    }
    return FilterReport(
        categories,
        _merge_pii(first.pii, second.pii),
        first.error or second.error,
        first.failed_closed or second.failed_closed,
    )


def failed(policy: FilterPolicy, reason: str) -> FilterReport:
    """The report when the classifier could not run: blocked iff the policy fails closed."""
    return FilterReport(error=reason, failed_closed=policy.on_error == "block")


def report_json(report: FilterReport) -> dict[str, object]:
    """Azure-style ``content_filter_results``: one object per category, then ``pii``.

    Each category: ``filtered`` (refused or cut because of it), ``detected`` (at or over its
    threshold), ``severity`` (bands of the score, see :func:`severity`) and the ``score``
    itself. ``pii`` names the kinds found, never their values. A failed classifier gives
    ``{"error": {"code", "message"}}`` instead, as Azure does.
    """
    if report.error is not None:
        return {
            "error": {"code": "content_filter_error", "message": report.error},
            "failed_closed": report.failed_closed,
        }
    out: dict[str, object] = {
        name: {
            "filtered": v.filtered,
            "detected": v.detected,
            "severity": severity(v.score),
            "score": round(v.score, 4),
        }
        for name, v in report.categories.items()
    }
    if report.pii is not None:
        out["pii"] = {
            "filtered": report.pii.filtered,
            "detected": report.pii.detected,
            "redacted": report.pii.redacted,
            "kinds": list(report.pii.kinds),
        }
    return out
