"""What a caller asks the gateway for, and the limits on it: engine-neutral, frozen call values.

The API layer translates each wire request (OpenAI, Mistral, Azure) into a :class:`ChatCall` or a
:class:`TextCall`; the chat assistant builds them directly. :func:`check_call` refuses anything
past the server's caps (``Settings.limits``) before any model is touched, and
:func:`settle_max_tokens` is the one place that decides how many tokens a request may generate,
once its prompt is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alize.config import LimitSettings
from alize.domain import FimPrompt, Message, SamplingParams, ToolSpec
from alize.errors import ContextLengthExceededError, InvalidRequestError
from alize.gateway.tools import ToolChoice


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatCall:
    """A chat completion: messages in, ``n`` choices out."""

    model: str
    messages: tuple[Message, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = None
    #: Mistral's ``safe_prompt``: the server's safety system prompt goes first
    safe_prompt: bool = False
    #: with no ``params.max_tokens``: at most this many tokens, fewer if the context has less room
    max_tokens_ceiling: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TextCall:
    """A text completion of ``prompt``, or a fill-in-the-middle between ``fim``'s two parts."""

    model: str
    params: SamplingParams = field(default_factory=SamplingParams)
    prompt: str | None = None
    fim: FimPrompt | None = None
    n: int = 1


def check_call(call: ChatCall | TextCall, limits: LimitSettings) -> None:
    """400 for anything past the server's caps on what one request may ask."""
    if isinstance(call, ChatCall):
        if len(call.messages) > limits.max_messages:
            raise InvalidRequestError(f"at most {limits.max_messages} messages are allowed", param="messages")
        if len(call.tools) > limits.max_tools:
            raise InvalidRequestError(f"at most {limits.max_tools} tools are allowed", param="tools")
    params = call.params
    if call.n > limits.max_n:
        raise InvalidRequestError(f"n must be at most {limits.max_n}", param="n")
    if params.max_tokens is not None and params.max_tokens > limits.max_tokens:
        raise InvalidRequestError(f"max_tokens must be at most {limits.max_tokens}", param="max_tokens")
    if len(params.stop) > limits.max_stop:
        raise InvalidRequestError(f"at most {limits.max_stop} stop sequences are allowed", param="stop")
    if any(len(s) > limits.max_stop_length or not s for s in params.stop):
        raise InvalidRequestError(
            f"stop sequences must be 1 to {limits.max_stop_length} characters long", param="stop"
        )
    if params.top_logprobs > limits.max_top_logprobs:
        raise InvalidRequestError(
            f"top_logprobs must be at most {limits.max_top_logprobs}", param="top_logprobs"
        )


def settle_max_tokens(
    asked: int | None, *, ceiling: int | None, cap: int, prompt_tokens: int, context_length: int
) -> int:
    """How many tokens a request may generate, once its prompt is counted.

    Asked for: exactly that many, and a 400 ``context_length_exceeded`` (with the numbers) when
    prompt and answer cannot both fit. Not asked for: what the context leaves after the prompt,
    at most ``ceiling`` (when the caller set one) and the server's ``cap``; a 400 only when the
    prompt alone fills the context. A long conversation thus gets a shorter reply rather than
    an error, while a client that named a length gets it or a clear refusal."""
    room = context_length - prompt_tokens
    if asked is not None:
        if asked > room:
            raise ContextLengthExceededError(
                prompt_tokens=prompt_tokens, max_tokens=asked, context_length=context_length
            )
        return asked
    if room < 1:
        raise ContextLengthExceededError(
            prompt_tokens=prompt_tokens, max_tokens=0, context_length=context_length
        )
    limit = min(ceiling, cap) if ceiling is not None else cap
    return max(1, min(room, limit))
