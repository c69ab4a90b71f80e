"""The llama.cpp worker's dialect of the OpenAI wire: the public body
(:mod:`alize.engines.openai_wire`) plus the server's own extras.

* ``cache_prompt``: reuse the slot's KV cache for a shared prefix;
* ``parse_tool_calls``: the server parses its model's tool-call syntax into ``tool_calls``;
* completions take ``json_schema`` (the server reads ``response_format`` on chat only) and a
  prompt that may be a token list (a FIM prompt built from the model's own FIM tokens).
"""

from __future__ import annotations

from typing import Any

from alize.domain import GenerationRequest
from alize.engines import openai_wire


def chat_body(request: GenerationRequest) -> dict[str, Any]:
    body = openai_wire.chat_body(request)
    body["cache_prompt"] = True
    if request.tools:
        body["parse_tool_calls"] = True
    return body


def completion_body(request: GenerationRequest, prompt: str | list[int | str]) -> dict[str, Any]:
    body = openai_wire.completion_body(request, prompt)
    body["cache_prompt"] = True
    body.pop("response_format", None)
    if request.params.json_schema is not None:
        body["json_schema"] = request.params.json_schema
    return body
