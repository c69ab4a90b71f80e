"""Translate between Alizé's domain values and llama.cpp server JSON.

The worker's listener speaks OpenAI-like JSON; Alizé never passes it through to clients.
Here it is turned into :class:`~alize.domain.Delta` values, and requests are built from
:class:`~alize.domain.GenerationRequest`.
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


def sampling_json(request: GenerationRequest) -> dict[str, Any]:
    p = request.params
    body: dict[str, Any] = {
        "temperature": p.temperature,
        "top_p": p.top_p,
        "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": True,
    }
    if p.max_tokens is not None:
        body["max_tokens"] = p.max_tokens
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    return body


def chat_body(request: GenerationRequest) -> dict[str, Any]:
    body = sampling_json(request)
    body["messages"] = [message_json(m) for m in request.messages]
    p = request.params
    if p.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = p.top_logprobs
    if p.json_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"schema": p.json_schema}}
    if request.tools:
        body["tools"] = tools_json(request.tools)
        body["tool_choice"] = request.tool_choice or "auto"
        body["parse_tool_calls"] = True
    return body


def completion_body(request: GenerationRequest, prompt: str | list[int | str]) -> dict[str, Any]:
    body = sampling_json(request)
    body["prompt"] = prompt
    p = request.params
    if p.logprobs:
        body["logprobs"] = max(1, p.top_logprobs)
    if p.json_schema is not None:
        body["json_schema"] = p.json_schema
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
