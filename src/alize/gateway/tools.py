"""Function calling for models whose chat template knows nothing of tools.

Measured: with SmolLM2's template, llama.cpp's own tool parsing returns plain text even for
``tool_choice: required``. So when the template lacks tool support, Alizé
  * describes the tools in a system message,
  * for ``required`` / a named function, constrains decoding with a JSON schema built from the
    allowed tools (``{"name": <const>, "arguments": <the tool's parameters>}``), so the output
    always parses and matches a tool's parameters,
  * for ``auto``, lets the model choose and recognises a JSON call in its reply,
and turns the result into ``tool_calls`` with ``finish_reason: tool_calls``.
Templates with tool support get the tools natively instead.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from alize.domain import JSONSchema, Message, ToolCall, ToolSpec
from alize.errors import InvalidRequestError

ToolChoice = str | None  # None/"none"/"auto"/"required" or the name of one function

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """How one request's tools are handled: ``mode`` is off, native, constrained or auto."""

    mode: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    json_schema: JSONSchema | None = None

    @property
    def emulated(self) -> bool:
        return self.mode in ("constrained", "auto")


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _call_schema(tool: ToolSpec) -> JSONSchema:
    params = tool.parameters or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": params},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _system_prompt(tools: tuple[ToolSpec, ...], forced: bool) -> str:
    lines = ["You can call these functions:"]
    for tool in tools:
        lines.append(
            f"- {tool.name}: {tool.description or 'no description'}. "
            f"Arguments (JSON schema): {json.dumps(tool.parameters, separators=(',', ':'))}"
        )
    if forced:
        lines.append(
            'Reply with one JSON object {"name": <function name>, "arguments": {...}} and nothing else.'
        )
    else:
        lines.append(
            'If a function is needed, reply only with a JSON object {"name": <function name>, '
            '"arguments": {...}}; otherwise answer normally.'
        )
    return "\n".join(lines)


def _flatten_tool_turns(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """Earlier tool calls and results as plain turns, which any template can render."""
    out: list[Message] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = [{"name": c.name, "arguments": json.loads(c.arguments or "{}")} for c in m.tool_calls]
            text = json.dumps(calls[0] if len(calls) == 1 else calls)
            out.append(Message(role="assistant", content=((m.content or "") + "\n" + text).strip()))
        elif m.role == "tool":
            label = m.name or m.tool_call_id or "function"
            out.append(Message(role="user", content=f"Result of {label}: {m.content or ''}"))
        else:
            out.append(m)
    return tuple(out)


def plan_tools(
    messages: tuple[Message, ...], tools: tuple[ToolSpec, ...], choice: ToolChoice, *, native: bool
) -> ToolPlan:
    if not tools or choice == "none":
        has_tool_turns = any(m.role == "tool" or m.tool_calls for m in messages)
        return ToolPlan("off", _flatten_tool_turns(messages) if has_tool_turns and not native else messages)
    allowed = tools
    if choice not in (None, "auto", "required"):
        allowed = tuple(t for t in tools if t.name == choice)
        if not allowed:
            raise InvalidRequestError(
                f"tool_choice names '{choice}', which is not among the tools", param="tool_choice"
            )
    if native:
        return ToolPlan("native", messages, tools=tools)
    forced = choice not in (None, "auto")
    system = Message(role="system", content=_system_prompt(allowed, forced))
    flat = _flatten_tool_turns(messages)
    if flat and flat[0].role == "system":
        merged = Message(role="system", content=f"{flat[0].content}\n\n{system.content}")
        flat = (merged, *flat[1:])
    else:
        flat = (system, *flat)
    if not forced:
        return ToolPlan("auto", flat, tools=allowed)
    schemas = [_call_schema(t) for t in allowed]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return ToolPlan("constrained", flat, tools=allowed, json_schema=schema)


def parse_tool_call(text: str, tools: tuple[ToolSpec, ...]) -> ToolCall | None:
    """A tool call in the model's reply, or None when the reply is an ordinary answer."""
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1)
    if not candidate.startswith("{"):
        return None
    try:
        value: Any = json.loads(candidate)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    arguments = value.get("arguments", value.get("parameters", {}))
    if not isinstance(name, str) or name not in {t.name for t in tools} or not isinstance(arguments, dict):
        return None
    return ToolCall(id=new_call_id(), name=name, arguments=json.dumps(arguments))


def may_become_call(prefix: str) -> bool:
    """While streaming in auto mode: could the text so far still turn out to be a JSON call?"""
    stripped = prefix.lstrip()
    return (
        stripped == ""
        or stripped.startswith("{")
        or "```".startswith(stripped[:3])
        or stripped.startswith("```")
    )
