"""Wire requests (OpenAI / Mistral / Azure shapes) into the gateway's engine-neutral calls."""

from __future__ import annotations

import json
from typing import Any

from alize.domain import FimPrompt, Message, SamplingParams, ToolCall, ToolSpec
from alize.errors import InvalidRequestError, UnsupportedFeatureError
from alize.gateway.calls import ChatCall, TextCall
from alize.gateway.tools import ToolChoice
from alize.protocol.openai.chat import ChatCompletionRequest, ChatMessageIn
from alize.protocol.openai.completions import CompletionRequest, FimRequest

#: OpenAI's default ``max_tokens`` for ``/v1/completions`` (chat and FIM have none: the gateway
#: then gives what the context leaves, see ``alize.gateway.calls.settle_max_tokens``)
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def _text_content(message: ChatMessageIn, index: int) -> str | None:
    content = message.content
    if content is None or isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise UnsupportedFeatureError(
                f"message {index} has a '{part.type}' content part; only text is supported",
                param=f"messages.{index}.content",
            )
        texts.append(part.text)
    return "".join(texts)


def _arguments(value: str | dict[str, Any]) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def to_messages(messages: list[ChatMessageIn]) -> tuple[Message, ...]:
    out: list[Message] = []
    for i, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        calls = tuple(
            ToolCall(
                id=c.id or f"call_{i}_{j}", name=c.function.name, arguments=_arguments(c.function.arguments)
            )
            for j, c in enumerate(m.tool_calls or ())
        )
        out.append(
            Message(
                role=role,
                content=_text_content(m, i),
                name=m.name,
                tool_calls=calls,
                tool_call_id=m.tool_call_id,
            )
        )
    _check_tool_turns(out)
    return tuple(out)


def _check_tool_turns(messages: list[Message]) -> None:
    """A ``tool`` message answers the tool calls of the assistant message before it (OpenAI's
    and Mistral's rule). A lone one used to reach llama.cpp, whose template step then never
    answered: the request hung past a minute instead of getting a 400."""
    answering = False
    for i, m in enumerate(messages):
        if m.role == "tool" and not answering:
            raise InvalidRequestError(
                "a message with role 'tool' must answer the tool_calls of a preceding assistant message",
                param=f"messages.{i}.role",
                code="invalid_tool_message",
            )
        answering = (m.role == "assistant" and bool(m.tool_calls)) or (m.role == "tool" and answering)


def _tool_choice(request: ChatCompletionRequest) -> ToolChoice:
    choice = request.tool_choice
    if choice is None:
        return None
    if isinstance(choice, str):
        return "required" if choice == "any" else choice
    return choice.function.name


def _json_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidRequestError(
            "response_format of type json_schema needs json_schema.schema",
            param="response_format.json_schema",
        )
    return fmt.json_schema.schema_


def _params(
    *,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    stop: str | list[str] | None,
    seed: int | None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    logprobs: bool = False,
    top_logprobs: int = 0,
    json_schema: dict[str, Any] | None = None,
    ignore_eos: bool = False,
) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        stop=_stops(stop),
        seed=seed,
        presence_penalty=presence_penalty or 0.0,
        frequency_penalty=frequency_penalty or 0.0,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        json_schema=json_schema,
        ignore_eos=ignore_eos,
    )


def _refuse_logit_bias(bias: dict[str, float] | None) -> None:
    """``logit_bias`` is refused, not silently ignored: token ids differ between models, and
    a client relying on a ban or a boost must know it is not applied."""
    if bias:
        raise UnsupportedFeatureError("logit_bias is not supported by this server", param="logit_bias")


def chat_call(request: ChatCompletionRequest) -> ChatCall:
    _refuse_logit_bias(request.logit_bias)
    max_tokens = request.max_completion_tokens or request.max_tokens
    if request.top_logprobs and not request.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
    params = _params(
        max_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        seed=request.seed if request.seed is not None else request.random_seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs or 0,
        json_schema=_json_schema(request),
        ignore_eos=request.ignore_eos,
    )
    tools = tuple(
        ToolSpec(
            name=t.function.name,
            description=t.function.description or "",
            parameters=t.function.parameters or {"type": "object", "properties": {}},
        )
        for t in request.tools or ()
    )
    return ChatCall(
        model=request.model,
        messages=to_messages(request.messages),
        params=params,
        n=request.n or 1,
        tools=tools,
        tool_choice=_tool_choice(request),
        safe_prompt=request.safe_prompt,
    )


def text_call(request: CompletionRequest) -> TextCall:
    _refuse_logit_bias(request.logit_bias)
    if isinstance(request.prompt, list):
        if len(request.prompt) != 1:
            raise UnsupportedFeatureError("send one prompt per request", param="prompt")
        prompt = request.prompt[0]
    else:
        prompt = request.prompt
    params = _params(
        max_tokens=request.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        logprobs=request.logprobs is not None,
        top_logprobs=request.logprobs or 0,
        ignore_eos=request.ignore_eos,
    )
    fim = FimPrompt(prefix=prompt, suffix=request.suffix) if request.suffix is not None else None
    return TextCall(
        model=request.model, params=params, prompt=None if fim else prompt, fim=fim, n=request.n or 1
    )


def fim_call(request: FimRequest) -> TextCall:
    params = _params(
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        seed=request.random_seed,
    )
    return TextCall(
        model=request.model,
        params=params,
        fim=FimPrompt(prefix=request.prompt, suffix=request.suffix or ""),
    )
