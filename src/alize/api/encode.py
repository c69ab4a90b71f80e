"""Generation events into OpenAI-shaped replies: whole responses and SSE chunk streams.

Alizé owns its wire format: every chunk is built from ``alize.protocol`` models, never passed
through from the engine. A failure after the stream started becomes a final ``data:`` error
event and the stream ends without ``[DONE]``, so clients can tell it from a clean finish.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic_core import to_json

from alize.api.errors import error_event
from alize.domain import Delta, FinishReason, TokenLogprob
from alize.errors import AlizeError, EngineError
from alize.gateway.generation import Generation
from alize.protocol.openai.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChatMessageOut,
    FunctionCallOut,
    ToolCallDelta,
    ToolCallOut,
)
from alize.protocol.openai.common import (
    ChoiceLogprobs,
    CompletionUsage,
    LogprobEntry,
    PromptTokensDetails,
    TopLogprobEntry,
)
from alize.protocol.openai.completions import Completion, CompletionChoice, CompletionLogprobs
from alize.protocol.sse import DONE, sse_data
from alize.safety.policy import FilterReport, report_json

log = logging.getLogger(__name__)


def _filter_extras(generation: Generation) -> dict[str, Any]:
    """Azure's ``prompt_filter_results`` when the deployment filtered the prompt."""
    if generation.prompt_filter is None:
        return {}
    results = report_json(generation.prompt_filter)
    return {"prompt_filter_results": [{"prompt_index": 0, "content_filter_results": results}]}


def _choice_extras(report: FilterReport | None) -> dict[str, Any]:
    """Azure's ``content_filter_results`` on a choice the output filter checked."""
    return {"content_filter_results": report_json(report)} if report is not None else {}


def usage_of(generation: Generation) -> CompletionUsage:
    u = generation.usage
    return CompletionUsage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_tokens),
    )


def _logprobs(entries: list[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            LogprobEntry(
                token=e.token,
                logprob=e.logprob,
                bytes=list(e.bytes) if e.bytes is not None else None,
                top_logprobs=[
                    TopLogprobEntry(
                        token=t.token, logprob=t.logprob, bytes=list(t.bytes) if t.bytes else None
                    )
                    for t in e.top_logprobs
                ],
            )
            for e in entries
        ]
    )


def _tool_calls_out(delta: Delta) -> list[ToolCallOut]:
    return [
        ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments))
        for c in delta.tool_calls
    ]


async def collect_chat(generation: Generation, *, n: int, want_logprobs: bool) -> ChatCompletion:
    texts = [""] * n
    finish: list[FinishReason | None] = [None] * n
    calls: list[list[ToolCallOut]] = [[] for _ in range(n)]
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
    reports: list[FilterReport | None] = [None] * n
    async for event in generation.events:
        i, delta = event.index, event.delta
        reports[i] = event.filter or reports[i]
        texts[i] += delta.text
        logprobs[i].extend(delta.logprobs)
        if delta.tool_calls:
            calls[i].extend(_tool_calls_out(delta))
        if delta.finish_reason is not None:
            finish[i] = delta.finish_reason
    choices = [
        ChatChoice(
            index=i,
            message=ChatMessageOut(
                role="assistant",
                content=texts[i] if texts[i] or not calls[i] else None,
                tool_calls=calls[i] or None,
            ),
            finish_reason=str(finish[i] or FinishReason.STOP),
            logprobs=_logprobs(logprobs[i]) if want_logprobs else None,
            **_choice_extras(reports[i]),
        )
        for i in range(n)
    ]
    return ChatCompletion(
        id=f"chatcmpl-{generation.request_id.removeprefix('req_')}",
        created=generation.created,
        model=generation.deployment,
        choices=choices,
        usage=usage_of(generation),
        system_fingerprint="alize",
        **_filter_extras(generation),
    )


ChunkEncoder = Callable[..., bytes]


def chunk_encoder(generation: Generation) -> ChunkEncoder:
    """``chunk(choices, usage=None, **extras)``: one SSE chunk of ``generation``'s stream."""
    chunk_id = f"chatcmpl-{generation.request_id.removeprefix('req_')}"

    def chunk(choices: list[ChatChunkChoice], usage: CompletionUsage | None = None, **extras: Any) -> bytes:
        c = ChatCompletionChunk(
            id=chunk_id,
            created=generation.created,
            model=generation.deployment,
            choices=choices,
            system_fingerprint="alize",
            **extras,
        )
        if usage is not None:
            c.usage = usage
        return sse_data(c.to_json())

    return chunk


#: stands for a token's text while a text chunk is laid out (a NUL: never a model's text)
_TEXT_MARK = "\x00alize-text\x00"


class TextChunks:
    """The SSE bytes of a chunk that carries only one choice's text: by far the most common
    event of a stream. Each choice's chunk is laid out once, from the models' own dump with a
    mark for the text; then a token costs one C call, ``pydantic_core.to_json``, the serializer
    that dump uses, so the bytes are the same. Building and dumping three models a token was
    about 7% of the gateway's CPU on a short stream (py-spy), and it is paid per token."""

    def __init__(self, chunk: ChunkEncoder) -> None:
        self._chunk = chunk
        self._layouts: dict[int, tuple[bytes, bytes]] = {}

    def __call__(self, index: int, text: str) -> bytes:
        layout = self._layouts.get(index)
        if layout is None:
            choice = ChatChunkChoice(index=index, delta=ChatDelta(content=_TEXT_MARK), finish_reason=None)
            before, mark, after = self._chunk([choice]).partition(to_json(_TEXT_MARK))
            assert mark, "the text mark is in the laid-out chunk"
            layout = self._layouts[index] = (before, after)
        before, after = layout
        return before + to_json(text) + after


async def stream_chat(
    generation: Generation, *, n: int, include_usage: bool, want_logprobs: bool
) -> AsyncIterator[bytes]:
    chunk = chunk_encoder(generation)
    text_chunk = TextChunks(chunk)
    try:
        yield chunk(
            [
                ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""), finish_reason=None)
                for i in range(n)
            ],
            **_filter_extras(generation),
        )
        async for event in generation.events:
            delta = event.delta
            if not (delta.text or delta.tool_calls or delta.finish_reason or delta.logprobs):
                continue
            plain = not (delta.tool_calls or delta.finish_reason or (want_logprobs and delta.logprobs))
            if delta.text and plain and event.filter is None:
                yield text_chunk(event.index, delta.text)
                continue
            out = ChatDelta()
            if delta.text:
                out.content = delta.text
            if delta.tool_calls:
                out.tool_calls = [
                    ToolCallDelta(
                        index=j,
                        id=c.id,
                        type="function",
                        function=FunctionCallOut(name=c.name, arguments=c.arguments),
                    )
                    for j, c in enumerate(delta.tool_calls)
                ]
            choice = ChatChunkChoice(
                index=event.index,
                delta=out,
                finish_reason=str(delta.finish_reason) if delta.finish_reason else None,
                **_choice_extras(event.filter),
            )
            if want_logprobs and delta.logprobs:
                choice.logprobs = _logprobs(list(delta.logprobs))
            yield chunk([choice])
        if include_usage:
            yield chunk([], usage_of(generation))
        yield DONE
    except AlizeError as exc:
        yield sse_data(error_event(exc))
    except Exception as exc:  # never a silent [DONE]: the client learns the stream failed
        log.exception("stream failed", exc_info=exc)
        yield sse_data(error_event(EngineError("the stream failed unexpectedly")))


async def collect_completion(generation: Generation, *, n: int, want_logprobs: bool) -> Completion:
    texts = [""] * n
    finish: list[FinishReason | None] = [None] * n
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
    reports: list[FilterReport | None] = [None] * n
    async for event in generation.events:
        reports[event.index] = event.filter or reports[event.index]
        texts[event.index] += event.delta.text
        logprobs[event.index].extend(event.delta.logprobs)
        if event.delta.finish_reason is not None:
            finish[event.index] = event.delta.finish_reason
    return Completion(
        id=f"cmpl-{generation.request_id.removeprefix('req_')}",
        created=generation.created,
        model=generation.deployment,
        choices=[
            CompletionChoice(
                index=i,
                text=texts[i],
                finish_reason=str(finish[i] or FinishReason.STOP),
                logprobs=_completion_logprobs(logprobs[i]) if want_logprobs else None,
                **_choice_extras(reports[i]),
            )
            for i in range(n)
        ],
        usage=usage_of(generation),
        **_filter_extras(generation),
    )


def _completion_logprobs(entries: list[TokenLogprob]) -> CompletionLogprobs:
    return CompletionLogprobs(
        tokens=[e.token for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[{t.token: t.logprob for t in e.top_logprobs} for e in entries],
    )


async def stream_completion(generation: Generation, *, include_usage: bool) -> AsyncIterator[bytes]:
    cid = f"cmpl-{generation.request_id.removeprefix('req_')}"
    prompt_extras = _filter_extras(generation)  # sent with the first chunk, as Azure does
    try:
        async for event in generation.events:
            delta = event.delta
            if not (delta.text or delta.finish_reason):
                continue
            c = Completion(
                id=cid,
                created=generation.created,
                model=generation.deployment,
                choices=[
                    CompletionChoice(
                        index=event.index,
                        text=delta.text,
                        finish_reason=str(delta.finish_reason) if delta.finish_reason else None,
                        **_choice_extras(event.filter),
                    )
                ],
                **prompt_extras,
            )
            prompt_extras = {}
            yield sse_data(c.to_json())
        if include_usage:
            c = Completion(id=cid, created=generation.created, model=generation.deployment, choices=[])
            c.usage = usage_of(generation)
            yield sse_data(c.to_json())
        yield DONE
    except AlizeError as exc:
        yield sse_data(error_event(exc))
    except Exception as exc:
        log.exception("stream failed", exc_info=exc)
        yield sse_data(error_event(EngineError("the stream failed unexpectedly")))
