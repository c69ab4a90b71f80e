"""``SAFETY__TIMEOUT_S``: a classifier slower than the timeout is a failed filter, and the policy's
``on_error`` decides (block = fail closed, allow = let it through, saying so).

The classifier here is the real one, its loading held back by the test until after the timeout
has fired (an event, not a race against the clock); once released it answers, so the same
service then judges texts normally.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from alize.errors import ContentFilterUnavailableError
from alize.gateway.safety import ContentSafety, refuse_if_blocked
from alize.safety.classifier import ContentClassifier
from alize.safety.moderator import Moderator
from alize.safety.policy import FilterPolicy

TEXT = "The weather in Lyon is mild today and the market opens at nine."


def _held_moderator(release: threading.Event, entered: threading.Event) -> Moderator:
    def load() -> ContentClassifier:
        entered.set()
        assert release.wait(60), "the test never released the classifier"
        return ContentClassifier.from_path(None)

    return Moderator(load)


@pytest.mark.parametrize(("on_error", "blocked"), [("block", True), ("allow", False)])
async def test_a_classifier_past_the_timeout_fails_as_the_policy_says(
    on_error: str, blocked: bool, caplog: pytest.LogCaptureFixture
) -> None:
    release, entered = threading.Event(), threading.Event()
    safety = ContentSafety(_held_moderator(release, entered), timeout_s=0.2)
    policy = FilterPolicy(on_error=on_error)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="alize.gateway.safety"):
        report = await safety.screen(policy, [TEXT])
    assert entered.is_set()  # the classifier was running, and had not answered
    assert report.error == "the content classifier did not answer within 0.2 s"
    assert report.failed_closed is blocked and report.blocked is blocked
    assert report.categories == {}  # nothing was scored
    assert "took longer than 0.2 s" in caplog.text  # logged with the setting's value
    release.set()
    # the classifier, once loaded, answers within a timeout it can meet: a normal verdict
    patient = ContentSafety(safety.moderator, timeout_s=60)
    verdict = await patient.screen(policy, [TEXT])
    assert verdict.error is None and not verdict.blocked and "health" in verdict.categories


async def test_a_timed_out_prompt_is_refused_with_503_when_failing_closed() -> None:
    release, entered = threading.Event(), threading.Event()
    safety = ContentSafety(_held_moderator(release, entered), timeout_s=0.2)
    try:
        report = await safety.screen(FilterPolicy(), [TEXT])
        with pytest.raises(ContentFilterUnavailableError, match=r"within 0\.2 s") as raised:
            refuse_if_blocked(report, param="messages")
        assert raised.value.status_code == 503 and raised.value.code == "content_filter_error"
    finally:
        release.set()
        await asyncio.sleep(0)
