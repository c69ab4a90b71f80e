"""Content-filter policies: validation, defaults, the decision on scores, merging windows, JSON."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from alize.safety.policy import (
    RULE_CATEGORIES,
    CategoryRule,
    FilterPolicy,
    SafetyPolicy,
    decide,
    failed,
    merge,
    report_json,
    severity,
)

QUIET = {name: 0.1 for name in RULE_CATEGORIES}


def test_defaults_block_harm_and_only_annotate_advice() -> None:
    policy = FilterPolicy()
    assert policy.rule("violence_and_threats") == CategoryRule(action="block", threshold=0.5)
    assert policy.rule("selfharm").action == "block"
    for advice in ("health", "financial", "law"):
        assert policy.rule(advice).action == "annotate"
    assert policy.pii == "off" and policy.on_error == "block"


def test_unknown_category_and_bad_threshold_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown categories"):
        FilterPolicy.model_validate({"categories": {"weapons": {"action": "block"}}})
    with pytest.raises(ValidationError):
        FilterPolicy.model_validate({"categories": {"law": {"threshold": 1.5}}})
    with pytest.raises(ValidationError):
        FilterPolicy.model_validate({"pii": "shred"})
    with pytest.raises(ValidationError):
        SafetyPolicy.model_validate({"window_tokens": 0})
    with pytest.raises(ValidationError):
        SafetyPolicy.model_validate({"input": {}, "extra": 1})


def test_block_annotate_and_off_decide_differently_at_the_same_score() -> None:
    scores = {**QUIET, "violence_and_threats": 0.7, "health": 0.9, "law": 0.95}
    policy = FilterPolicy(categories={"law": CategoryRule(action="off")})
    report = decide(policy, scores, ())
    assert report.blocked and report.blocked_by == ["violence_and_threats"]
    assert report.categories["health"].detected and not report.categories["health"].filtered
    assert not report.categories["law"].detected
    assert not decide(policy, QUIET, ()).blocked


def test_threshold_moves_the_decision() -> None:
    scores = {**QUIET, "sexual": 0.3}
    assert not decide(FilterPolicy(), scores, ()).blocked
    strict = FilterPolicy(categories={"sexual": CategoryRule(action="block", threshold=0.25)})
    assert decide(strict, scores, ()).blocked_by == ["sexual"]


def test_a_preset_sets_the_threshold_of_every_rule_that_names_none() -> None:
    scores = {**QUIET, "hate_and_discrimination": 0.4, "selfharm": 0.6, "health": 0.6}
    assert decide(FilterPolicy(), scores, ()).blocked_by == ["selfharm"]
    strict = FilterPolicy(preset="strict", categories={"sexual": CategoryRule(action="annotate")})
    assert strict.rule("sexual") == CategoryRule(action="annotate", threshold=0.35)
    assert decide(strict, scores, ()).blocked_by == ["hate_and_discrimination", "selfharm"]
    lenient = FilterPolicy(preset="lenient")
    assert not decide(lenient, scores, ()).blocked
    assert not decide(lenient, scores, ()).categories["health"].detected
    # a rule's own threshold wins over the preset's
    own = FilterPolicy(preset="lenient", categories={"selfharm": CategoryRule(action="block", threshold=0.5)})
    assert decide(own, scores, ()).blocked_by == ["selfharm"]
    with pytest.raises(ValidationError):
        FilterPolicy.model_validate({"preset": "paranoid"})


@pytest.mark.parametrize(
    ("action", "detected", "filtered", "redacted"),
    [
        ("off", False, False, False),
        ("annotate", True, False, False),
        ("redact", True, False, True),
        ("block", True, True, False),
    ],
)
def test_pii_actions(action: str, detected: bool, filtered: bool, redacted: bool) -> None:
    report = decide(FilterPolicy.model_validate({"pii": action}), QUIET, ("EMAIL", "IBAN", "EMAIL"))
    assert report.pii is not None
    assert (report.pii.detected, report.pii.filtered, report.pii.redacted) == (detected, filtered, redacted)
    assert report.pii.kinds == (("EMAIL", "IBAN") if detected else ())
    assert report.blocked is filtered


def test_merge_keeps_the_worst_of_every_window() -> None:
    policy = FilterPolicy.model_validate({"pii": "annotate"})
    first = decide(policy, {**QUIET, "hate_and_discrimination": 0.8}, ("EMAIL",))
    second = decide(policy, {**QUIET, "health": 0.6}, ("PHONE",))
    whole = merge(first, second)
    assert whole.categories["hate_and_discrimination"].score == 0.8
    assert whole.categories["health"].detected
    assert whole.blocked_by == ["hate_and_discrimination"]
    assert whole.pii is not None and whole.pii.kinds == ("EMAIL", "PHONE")
    assert merge(None, second) is second


def test_classifier_failure_follows_on_error() -> None:
    closed = failed(FilterPolicy(), "the content classifier failed (OSError)")
    assert closed.blocked and closed.blocked_by == []
    opened = failed(FilterPolicy(on_error="allow"), "timeout")
    assert not opened.blocked
    body = report_json(closed)
    assert body == {
        "error": {"code": "content_filter_error", "message": "the content classifier failed (OSError)"},
        "failed_closed": True,
    }


def test_report_json_is_azure_shaped_and_never_holds_pii_values() -> None:
    report = decide(
        FilterPolicy.model_validate({"pii": "redact"}), {**QUIET, "violence_and_threats": 0.8}, ("EMAIL",)
    )
    body = report_json(report)
    assert set(body) == {*RULE_CATEGORIES, "pii"}
    assert body["violence_and_threats"] == {
        "filtered": True,
        "detected": True,
        "severity": "high",
        "score": 0.8,
    }
    assert body["pii"] == {"filtered": False, "detected": True, "redacted": True, "kinds": ["EMAIL"]}


def test_severity_bands() -> None:
    assert [severity(s) for s in (0.0, 0.3, 0.5, 0.74, 0.75, 1.0)] == [
        "safe",
        "low",
        "medium",
        "medium",
        "high",
        "high",
    ]
