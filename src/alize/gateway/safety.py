"""The safety step of the policy pipeline: screen a prompt with a deployment's input filter.

The classifier is CPU work (a few milliseconds for a 200-word text), so it runs in a worker
thread, bounded by ``timeout_s``. A failure or a timeout never escapes as a crash: it becomes a
:class:`~alize.safety.policy.FilterReport` with ``error`` set, blocked exactly when the policy
fails closed, so the caller always learns which way the failure went.

The streamed output filter lives in :mod:`alize.gateway.output_filter`; both use
:meth:`ContentSafety.screen`, so a text is judged the same way in both directions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from alize.domain import FimPrompt, Message
from alize.errors import ContentFilterError, ContentFilterUnavailableError
from alize.safety.moderator import Moderator
from alize.safety.pii import redact
from alize.safety.policy import FilterPolicy, FilterReport, decide, failed, report_json

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScreenedChat:
    report: FilterReport
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class ScreenedText:
    report: FilterReport
    prompt: str | None
    fim: FimPrompt | None


class ContentSafety:
    """Runs the moderator for the pipeline's input and output filters."""

    def __init__(self, moderator: Moderator, *, timeout_s: float = 2.0) -> None:
        self.moderator = moderator
        self._timeout_s = timeout_s

    async def screen(self, policy: FilterPolicy, texts: Sequence[str]) -> FilterReport:
        """Judge ``texts`` as one conversation (the worst message decides) under ``policy``."""
        try:
            results = await asyncio.wait_for(
                asyncio.to_thread(self.moderator.classify_conversations, [list(texts)]), self._timeout_s
            )
        except TimeoutError:
            log.error("the content classifier took longer than %.1f s", self._timeout_s)
            return failed(policy, f"the content classifier did not answer within {self._timeout_s:g} s")
        except Exception as exc:
            log.error("the content classifier failed: %s: %s", type(exc).__name__, exc)
            return failed(policy, f"the content classifier failed ({type(exc).__name__})")
        result = results[0]
        return decide(policy, result.scores, tuple(span.kind for span in result.pii))

    async def screen_chat(self, policy: FilterPolicy, messages: Sequence[Message]) -> ScreenedChat:
        """Screen every message (tool results and earlier turns included: a prompt injection can
        hide in any of them); redact PII in each one when the policy says so."""
        texts = [m.content for m in messages if m.content]
        report = await self.screen(policy, texts)
        refuse_if_blocked(report, param="messages")
        if report.pii is not None and report.pii.redacted:
            messages = tuple(replace(m, content=redact(m.content)) if m.content else m for m in messages)
        return ScreenedChat(report, tuple(messages))

    async def screen_text(
        self, policy: FilterPolicy, prompt: str | None, fim: FimPrompt | None
    ) -> ScreenedText:
        """The same for a text or fill-in-the-middle prompt."""
        texts = [t for t in (prompt, fim.prefix if fim else None, fim.suffix if fim else None) if t]
        report = await self.screen(policy, texts)
        refuse_if_blocked(report, param="prompt")
        if report.pii is not None and report.pii.redacted:
            prompt = redact(prompt) if prompt else prompt
            fim = FimPrompt(redact(fim.prefix), redact(fim.suffix)) if fim else None
        return ScreenedText(report, prompt, fim)


def refuse_if_blocked(report: FilterReport, *, param: str) -> None:
    """Raise the client-facing error of a blocked prompt: 400 ``content_filter`` naming the
    categories (with every category's result, Azure's ``innererror`` shape), or 503
    ``content_filter_error`` when the filter failed and the policy fails closed."""
    if not report.blocked:
        return
    results = report_json(report)
    if report.failed_closed:
        raise ContentFilterUnavailableError(
            f"The input content filter could not run ({report.error}); this deployment's policy "
            "is to fail closed, so the request was refused. Retry later.",
            extra={"innererror": {"code": "ContentFilterUnavailable", "content_filter_result": results}},
        )
    raise ContentFilterError(
        "The prompt was filtered by this deployment's content policy "
        f"(categories: {', '.join(report.blocked_by)}).",
        param=param,
        extra={"innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": results}},
    )
