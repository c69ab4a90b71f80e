"""The streamed output filter: windows, the stream-cut bound, redaction across windows, failures.

The classifier is replaced by a rule ("FORBIDDEN" in the checked text blocks) so these tests pin
the windowing itself; the real classifier is exercised in tests/api/test_content_filters.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from alize.domain import Delta, FinishReason, ToolCall, Usage
from alize.gateway.choices import ChoiceEvent
from alize.gateway.generation import Generation
from alize.gateway.output_filter import filter_output
from alize.gateway.safety import ContentSafety
from alize.safety.moderator import create_moderator
from alize.safety.pii import detect, redact
from alize.safety.policy import FilterPolicy, FilterReport, decide, failed

QUIET: dict[str, float] = {}


class RuleSafety(ContentSafety):
    """Blocks a window containing FORBIDDEN; records every text it was asked to judge."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__(create_moderator())
        self.fail = fail
        self.checked: list[str] = []

    async def screen(self, policy: FilterPolicy, texts: Sequence[str]) -> FilterReport:
        text = texts[0]  # the window with its context (the second text is the window alone)
        self.checked.append(text)
        if self.fail:
            return failed(policy, "the content classifier failed (OSError)")
        scores = {"violence_and_threats": 0.9 if "FORBIDDEN" in text else 0.0}
        return decide(policy, scores, tuple(s.kind for s in detect(text)))


class Source:
    """Choice events from a word list, counting how many the filter pulled."""

    def __init__(self, words: list[str], *, index: int = 0, tool_calls: tuple[ToolCall, ...] = ()) -> None:
        self.words, self.index, self.tool_calls = words, index, tool_calls
        self.pulled = 0
        self.closed = False

    async def events(self) -> AsyncIterator[ChoiceEvent]:
        try:
            for word in self.words:
                self.pulled += 1
                yield ChoiceEvent(self.index, Delta(text=word, tokens=1))
            self.pulled += 1
            yield ChoiceEvent(
                self.index,
                Delta(
                    tool_calls=self.tool_calls,
                    finish_reason=FinishReason.TOOL_CALLS if self.tool_calls else FinishReason.STOP,
                    usage=Usage(prompt_tokens=3, completion_tokens=len(self.words)),
                ),
            )
        finally:
            self.closed = True


def _generation() -> Generation:
    async def nothing() -> AsyncIterator[ChoiceEvent]:
        return
        yield  # pragma: no cover

    return Generation("req_1", "d", 0, 3, None, nothing())


async def _run(
    events: AsyncIterator[ChoiceEvent],
    safety: ContentSafety,
    policy: FilterPolicy,
    *,
    window: int,
    n: int = 1,
    generation: Generation | None = None,
) -> list[ChoiceEvent]:
    generation = generation or _generation()
    return [e async for e in filter_output(generation, events, safety, policy, window_tokens=window, n=n)]


def _words(count: int, start: int = 0) -> list[str]:
    return [f"w{i} " for i in range(start, start + count)]


async def test_text_is_released_window_by_window_and_whole() -> None:
    source = Source(_words(40))
    out = await _run(source.events(), RuleSafety(), FilterPolicy(), window=8)
    texts = [e.delta.text for e in out if e.delta.text]
    assert len(texts) == 5 and all(len(t.split()) == 8 for t in texts)
    assert "".join(texts) == "".join(source.words)
    assert out[-1].delta.finish_reason == FinishReason.STOP
    assert out[-1].filter is not None and not out[-1].filter.blocked


async def test_a_violating_passage_is_cut_within_one_window_and_never_shown() -> None:
    window = 8
    words = [*_words(21), "FORBIDDEN ", *_words(40, start=100)]
    source = Source(words)
    generation = _generation()
    out = await _run(source.events(), RuleSafety(), FilterPolicy(), window=window, generation=generation)
    shown = "".join(e.delta.text for e in out)
    assert "FORBIDDEN" not in shown
    assert "".join(words).startswith(shown) and shown  # what was released is exact, in order
    assert out[-1].delta.finish_reason == FinishReason.CONTENT_FILTER
    assert out[-1].filter is not None and out[-1].filter.blocked_by == ["violence_and_threats"]
    violating_at = words.index("FORBIDDEN ") + 1  # tokens generated up to and including it
    assert source.pulled - violating_at <= window  # the cut bound
    assert source.closed and generation.stopped == {0}


async def test_pii_is_redacted_even_when_it_straddles_windows() -> None:
    text = (
        "Write to jean.dupont@example.com or call +33 6 12 34 56 78 today; the IBAN is "
        "FR76 3000 6000 0112 3456 7890 189 and that is all you need to know about the transfer."
    )
    words = [w + " " for w in text.split()]
    policy = FilterPolicy.model_validate({"pii": "redact"})
    for window in (1, 2, 3, 5):
        out = await _run(Source(words).events(), RuleSafety(), policy, window=window)
        chunks = [e.delta.text for e in out]
        assert "".join(chunks) == redact("".join(words)), window
        assert "[EMAIL]" in "".join(chunks) and "[IBAN]" in "".join(chunks)
        assert not any("@" in c or "3456" in c or "56 78" in c for c in chunks)
        final = out[-1].filter
        assert final is not None and final.pii is not None and final.pii.redacted
        assert set(final.pii.kinds) >= {"EMAIL", "PHONE", "IBAN"}


async def test_a_failed_classifier_blocks_when_the_policy_fails_closed() -> None:
    source = Source(_words(30))
    out = await _run(source.events(), RuleSafety(fail=True), FilterPolicy(), window=8)
    assert [e.delta.text for e in out] == [""]
    assert out[0].delta.finish_reason == FinishReason.CONTENT_FILTER
    assert out[0].filter is not None and out[0].filter.error and out[0].filter.failed_closed
    assert source.pulled <= 9


async def test_a_failed_classifier_lets_text_through_when_the_policy_allows_it() -> None:
    source = Source(_words(30))
    out = await _run(source.events(), RuleSafety(fail=True), FilterPolicy(on_error="allow"), window=8)
    assert "".join(e.delta.text for e in out) == "".join(source.words)
    assert out[-1].delta.finish_reason == FinishReason.STOP
    assert out[-1].filter is not None and out[-1].filter.error and not out[-1].filter.failed_closed


async def test_tool_call_arguments_are_checked_too() -> None:
    call = ToolCall(id="c1", name="send", arguments='{"body": "FORBIDDEN"}')
    out = await _run(Source([], tool_calls=(call,)).events(), RuleSafety(), FilterPolicy(), window=8)
    assert out[-1].delta.finish_reason == FinishReason.CONTENT_FILTER and not out[-1].delta.tool_calls


async def test_with_several_choices_only_the_violating_one_is_cut() -> None:
    bad, good = Source([*_words(3), "FORBIDDEN ", *_words(20)], index=0), Source(_words(24), index=1)

    async def both() -> AsyncIterator[ChoiceEvent]:
        a, b = bad.events(), good.events()
        for source in (a, b):
            async for event in source:
                yield event

    generation = _generation()
    out = await _run(both(), RuleSafety(), FilterPolicy(), window=4, n=2, generation=generation)
    finishes = {e.index: e.delta.finish_reason for e in out if e.delta.finish_reason}
    assert finishes == {0: FinishReason.CONTENT_FILTER, 1: FinishReason.STOP}
    assert "".join(e.delta.text for e in out if e.index == 1) == "".join(good.words)
    assert generation.stopped == {0}
