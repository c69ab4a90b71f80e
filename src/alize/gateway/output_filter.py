"""The streamed output filter: generated text is checked in windows and released only once checked.

Per choice, text is held back until ``window_tokens`` tokens have accumulated (or the choice
finishes); the window is then classified twice, in one batch, and the worse reading counts:
after the last ``CONTEXT_CHARS`` characters already released, and after only the last
``RECENT_CHARS`` of them (so a passage is judged with what leads into it, and a passage that
has just begun is not diluted by a long benign context). The window is never judged alone:
measured with ``bench/filters.py``, 16-token windows judged alone cut 4 of 32 replies to benign
questions, against none with context. Then the window

* passes → it is released to the client (PII redacted first when the policy redacts);
* is blocked → nothing of it is released, the choice ends with ``finish_reason:
  "content_filter"`` and its report, and its engine sequence is stopped at once.

**The cut bound.** Released text lags generation by fewer than ``window_tokens`` tokens. When a
check flags, the client has received none of the flagged window, and the engine is stopped
before it produces another token for that choice (one more may already be in flight: it is
metered, never shown). So generation stops within ``window_tokens`` (+1) tokens of the end of
the text the classifier first flags, and everything generated until the cut is metered. How
much violating text the classifier needs before it flags depends on the classifier: with the
shipped one, a sustained passage is typically flagged once it fills most of the recent
characters (one or two sentences; ``tests/api/test_content_filters.py``).

**Redaction while streaming.** An identifier can straddle two windows. When the policy
redacts, the last ``PII_HOLD_CHARS`` characters of a checked window are held until the next
one (and the cut is moved before any identifier that crosses it), so every identifier is
complete, and therefore detected, before any of it is released (identifiers up to 96
characters; the longest structured one, an IBAN written with spaces, has 42; the cut also falls
on a space, so an e-mail address is never split). Logprobs are not sent while redacting (they
would spell the identifier out).

Tool calls (native or emulated) are checked with the finishing window, as text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from alize.domain import Delta, FinishReason, TokenLogprob
from alize.gateway.choices import ChoiceEvent
from alize.gateway.generation import Generation
from alize.gateway.safety import ContentSafety
from alize.safety.pii import detect, redact
from alize.safety.policy import FilterPolicy, FilterReport, merge
from alize.streams import aclose

#: characters of released text classified again with each new window
CONTEXT_CHARS = 400
#: of those, the ones classified with the window as its "recent" reading
RECENT_CHARS = 160
#: characters held back at the end of a window when redacting (longer than any identifier)
PII_HOLD_CHARS = 96


@dataclass(slots=True)
class _ChoiceState:
    pending: str = ""
    pending_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    released_tail: str = ""
    report: FilterReport | None = None
    done: bool = False


def _redacted_release(pending: str, finishing: bool) -> tuple[str, str]:
    """(text to release, redacted; text to hold). The cut falls before the held tail, at a
    space, and before any identifier that crosses it; identifiers are detected once, in all of
    ``pending``, so the ones released are judged with the text that follows them."""
    spans = detect(pending)
    cut = len(pending)
    if not finishing:
        cut = max(0, len(pending) - PII_HOLD_CHARS)
        space = pending.rfind(" ", 0, cut + 1) if cut else -1
        if space >= 0:
            cut = space + 1  # never split a word (an e-mail address has no space in it)
        for span in spans:
            if span.start < cut < span.end:
                cut = span.start
    return redact(pending[:cut], [s for s in spans if s.end <= cut]), pending[cut:]


async def filter_output(
    generation: Generation,
    events: AsyncIterator[ChoiceEvent],
    safety: ContentSafety,
    policy: FilterPolicy,
    *,
    window_tokens: int,
    n: int,
) -> AsyncIterator[ChoiceEvent]:
    """``events`` with every choice's text checked in windows (see the module docstring)."""
    states = [_ChoiceState() for _ in range(n)]
    try:
        async for event in events:
            state = states[event.index]
            if state.done:
                continue  # tokens of a cut choice still in flight: metered upstream, never shown
            delta = event.delta
            finishing = delta.finish_reason is not None
            state.pending += delta.text
            state.pending_tokens += delta.tokens
            if not policy.redacts:
                state.logprobs.extend(delta.logprobs)
            if not finishing and (state.pending_tokens < window_tokens or not state.pending.strip()):
                continue
            calls = " ".join(f"{c.name} {c.arguments}" for c in delta.tool_calls)
            window = state.pending + (" " + calls if calls else "")
            # the window after its context, and after only the most recent part of it
            recent = state.released_tail[-RECENT_CHARS:] + window
            report = await safety.screen(policy, [state.released_tail + window, recent])
            state.report = merge(state.report, report)
            if report.blocked:
                state.done = True
                generation.stopped.add(event.index)
                yield ChoiceEvent(
                    event.index,
                    Delta(finish_reason=FinishReason.CONTENT_FILTER, usage=delta.usage),
                    filter=state.report,
                )
                if all(s.done for s in states):
                    return
                continue
            if policy.redacts:
                text, state.pending = _redacted_release(state.pending, finishing)
            else:
                text, state.pending = state.pending, ""
            state.pending_tokens = 0
            state.released_tail = (state.released_tail + text)[-CONTEXT_CHARS:]
            logprobs, state.logprobs = tuple(state.logprobs), []
            state.done = finishing
            yield ChoiceEvent(
                event.index,
                Delta(
                    text=text,
                    tool_calls=delta.tool_calls,
                    logprobs=logprobs,
                    finish_reason=delta.finish_reason,
                    usage=delta.usage,
                ),
                filter=state.report if finishing else None,
            )
    finally:
        await aclose(events)
