"""What the remote engine sends to and reads from an OpenAI-compatible upstream.

Pure functions over Alizé's domain values, kept apart from the HTTP client so they are tested
without a network: the request bodies (:mod:`alize.engines.openai_wire`'s, naming the upstream
model; only fields of the public OpenAI API, since an upstream may be strict about unknown
ones), the upstream's error body turned into a readable message, its ``Retry-After`` and the
context its model list reports, and the prompt-size estimate used when the upstream cannot count
tokens for us.
"""

from __future__ import annotations

import json
import math
import time
from email.utils import parsedate_to_datetime
from typing import Any

from alize.domain import GenerationRequest
from alize.engines import openai_wire
from alize.engines.http_client import EngineResponse

#: tokens a chat message costs beside its text (role markers, separators), as OpenAI counts them
TOKENS_PER_MESSAGE = 4
#: tokens that prime the assistant's reply after the last message
TOKENS_PER_REPLY = 3
#: UTF-8 bytes per token assumed by the estimate. Real tokenizers average about 4 bytes per token
#: on English and 3-4 on other Latin-script languages, so 3 over-counts: the estimate is meant to
#: err high (the budget holds a little more than needed and is refunded at settlement).
BYTES_PER_TOKEN = 3


def chat_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """A streamed ``/chat/completions`` request for the upstream's ``model``."""
    return openai_wire.chat_body(request, model=model)


def completion_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """A streamed ``/completions`` request; fill-in-the-middle uses the API's ``suffix`` field."""
    if request.fim is not None:
        return openai_wire.completion_body(
            request, request.fim.prefix, suffix=request.fim.suffix, model=model
        )
    return openai_wire.completion_body(request, request.prompt or "", model=model)


def estimate_prompt_tokens(request: GenerationRequest) -> int:
    """An upper-leaning estimate of the prompt's tokens when no tokenizer is at hand.

    ``ceil(utf8_bytes / 3)`` of every text the upstream will see (messages, tool definitions,
    prompt), plus OpenAI's per-message overhead. It is high for English and most European
    languages; scripts where one character is a whole token (CJK) come out about right. The
    upstream's own count, reported at the end of the stream, is what gets billed."""
    if request.messages:
        parts: list[str] = []
        for m in request.messages:
            parts += [m.role, m.content or "", m.name or ""]
            parts += [c.name + c.arguments for c in m.tool_calls]
        parts += [json.dumps(t.parameters) + t.name + t.description for t in request.tools]
        overhead = TOKENS_PER_MESSAGE * len(request.messages) + TOKENS_PER_REPLY
    else:
        parts = [request.fim.prefix, request.fim.suffix] if request.fim else [request.prompt or ""]
        overhead = 3 if request.fim else 1
    return overhead + estimate_text_tokens("".join(parts))


def estimate_text_tokens(text: str) -> int:
    """The same estimate for one bare text (an embeddings input)."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def upstream_message(content: bytes, status: int) -> tuple[str, str | None]:
    """The upstream error's message and code, from OpenAI's ``{"error": {...}}``, FastAPI's
    ``{"detail": ...}`` or plain text (cut short)."""
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code") or error.get("type")
            return str(error.get("message") or f"HTTP {status}")[:500], str(code) if code else None
        if isinstance(error, str):
            return error[:500], None
        if "detail" in data:
            return str(data["detail"])[:500], None
        if "message" in data:
            return str(data["message"])[:500], None
    text = content[:300].decode(errors="replace").strip()
    return text or f"HTTP {status}", None


def retry_after_s(response: EngineResponse, default: float) -> float:
    """The upstream's ``Retry-After``, in seconds (a number or an HTTP date), else ``default``."""
    value = response.headers.get("retry-after")
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return default


def context_of(entry: dict[str, Any]) -> int | None:
    """The context an upstream's model entry reports: vLLM's ``max_model_len``, a generic
    ``context_length``, or an Alizé deployment's slot size (its card)."""
    card = entry.get("card")
    card = card if isinstance(card, dict) else {}
    deployment = card.get("deployment")
    deployment = deployment if isinstance(deployment, dict) else {}
    for value in (
        entry.get("max_model_len"),
        entry.get("context_length"),
        deployment.get("ctx_per_slot"),
        card.get("context_length"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
