"""The OpenAI wire shape that every upstream Alizé talks to speaks: one builder of request bodies
and one decoder of streamed chunks, for the llama.cpp worker and for remote upstreams alike.

Bodies hold only fields of the public OpenAI API, so a strict upstream accepts them; an engine
with extras (llama.cpp's ``cache_prompt``, ``parse_tool_calls``, token-list prompts) adds them
on top in its own module (:mod:`alize.engines.llamacpp.wire`). Everything is streamed with
``stream_options.include_usage``: the final chunk carries the upstream's own token counts, so
metering stays exact; the gateway assembles non-streamed replies itself.

The values are Alizé's domain values (:mod:`alize.domain`); clients' wire models never reach an
engine, and nothing here is passed through to a client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alize.domain import (
    Delta,
    FinishReason,
    GenerationRequest,
    Message,
    TokenLogprob,
    ToolCall,
    ToolSpec,
    TopLogprob,
    Usage,
)

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def tools_json(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tools in the OpenAI wire shape (llama.cpp's server and remote upstreams both read it)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def message_json(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _sampling(request: GenerationRequest, model: str | None) -> dict[str, Any]:
    p = request.params
    body: dict[str, Any] = {} if model is None else {"model": model}
    body.update(
        temperature=p.temperature,
        top_p=p.top_p,
        stream=True,
        stream_options={"include_usage": True},
    )
    # zero is the API's default; some upstreams refuse penalties they do not support
    if p.presence_penalty:
        body["presence_penalty"] = p.presence_penalty
    if p.frequency_penalty:
        body["frequency_penalty"] = p.frequency_penalty
    if p.max_tokens is not None:
        body["max_tokens"] = p.max_tokens
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    if p.ignore_eos:  # only when asked: a strict upstream refuses fields it does not know
        body["ignore_eos"] = True
    if p.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": p.json_schema, "strict": True},
        }
    return body


def chat_body(request: GenerationRequest, *, model: str | None = None) -> dict[str, Any]:
    """A streamed ``/chat/completions`` request; tools are passed natively. ``model`` names the
    upstream's model (a server that serves one model, like the llama.cpp worker, needs none)."""
    body = _sampling(request, model)
    body["messages"] = [message_json(m) for m in request.messages]
    p = request.params
    if p.logprobs:
        body["logprobs"] = True
        # always explicit: llama.cpp's server reads an absent top_logprobs as 20
        body["top_logprobs"] = p.top_logprobs
    if request.tools:
        body["tools"] = tools_json(request.tools)
        body["tool_choice"] = request.tool_choice or "auto"
    return body


def completion_body(
    request: GenerationRequest,
    prompt: str | list[int | str],
    *,
    suffix: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """A streamed ``/completions`` request for ``prompt``; ``suffix`` is the API's field for
    fill-in-the-middle (an engine that knows the FIM tokens builds the prompt itself instead)."""
    body = _sampling(request, model)
    body["prompt"] = prompt
    if suffix is not None:
        body["suffix"] = suffix
    if request.params.logprobs:
        body["logprobs"] = max(1, request.params.top_logprobs)
    return body


def _logprobs(entries: list[dict[str, Any]] | None) -> tuple[TokenLogprob, ...]:
    if not entries:
        return ()
    return tuple(
        TokenLogprob(
            token=str(e.get("token", "")),
            logprob=float(e.get("logprob", 0.0)),
            bytes=tuple(e["bytes"]) if e.get("bytes") is not None else None,
            top_logprobs=tuple(
                TopLogprob(
                    token=str(t.get("token", "")),
                    logprob=float(t.get("logprob", 0.0)),
                    bytes=tuple(t["bytes"]) if t.get("bytes") is not None else None,
                )
                for t in e.get("top_logprobs") or ()
            ),
        )
        for e in entries
    )


class ChunkDecoder:
    """Folds the engine's stream into deltas; holds the finish reason until usage arrives so the
    last delta carries both, and accumulates natively parsed tool calls into whole calls."""

    def __init__(self) -> None:
        self.finish: FinishReason | None = None
        self._calls: dict[int, dict[str, str]] = {}

    def decode(self, chunk: dict[str, Any]) -> Delta | None:
        usage = chunk.get("usage")
        choices = chunk.get("choices") or []
        text = ""
        logprobs: tuple[TokenLogprob, ...] = ()
        for choice in choices:
            delta = choice.get("delta")
            if delta is not None:
                text += delta.get("content") or ""
                for call in delta.get("tool_calls") or ():
                    slot = self._calls.setdefault(
                        int(call.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                    )
                    slot["id"] = call.get("id") or slot["id"]
                    fn = call.get("function") or {}
                    slot["name"] += fn.get("name") or ""
                    slot["arguments"] += fn.get("arguments") or ""
            else:
                text += choice.get("text") or ""
            lp = choice.get("logprobs")
            if isinstance(lp, dict):
                logprobs += _logprobs(lp.get("content"))
            if choice.get("finish_reason"):
                self.finish = _FINISH.get(str(choice["finish_reason"]), FinishReason.STOP)
        tokens = len(logprobs) if logprobs else (1 if text else 0)
        if usage is not None:
            details = usage.get("prompt_tokens_details") or {}
            return Delta(
                text=text,
                tokens=tokens,
                logprobs=logprobs,
                tool_calls=self.tool_calls(),
                finish_reason=self.finish or FinishReason.STOP,
                usage=Usage(
                    prompt_tokens=int(usage.get("prompt_tokens", 0)),
                    completion_tokens=int(usage.get("completion_tokens", 0)),
                    cached_tokens=int(details.get("cached_tokens", 0)),
                ),
            )
        if text or logprobs:
            return Delta(text=text, tokens=tokens, logprobs=logprobs)
        return None

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"] or "{}")
            for i, c in sorted(self._calls.items())
        )
