"""Tool-call emulation for templates without tool support."""

from __future__ import annotations

import json

import pytest

from alize.domain import Message, ToolCall, ToolSpec
from alize.errors import InvalidRequestError
from alize.gateway.tools import may_become_call, parse_tool_call, plan_tools

WEATHER = ToolSpec("get_weather", "weather", {"type": "object", "properties": {"city": {"type": "string"}}})
TIME = ToolSpec("get_time", "time", {"type": "object", "properties": {"zone": {"type": "string"}}})
USER = (Message(role="user", content="Weather in Lyon?"),)


def test_required_builds_a_schema_over_allowed_tools() -> None:
    plan = plan_tools(USER, (WEATHER, TIME), "required", native=False)
    assert plan.mode == "constrained"
    assert plan.json_schema is not None
    names = [s["properties"]["name"]["const"] for s in plan.json_schema["anyOf"]]
    assert names == ["get_weather", "get_time"]
    assert plan.messages[0].role == "system" and "get_weather" in (plan.messages[0].content or "")


def test_named_function_narrows_the_schema() -> None:
    plan = plan_tools(USER, (WEATHER, TIME), "get_time", native=False)
    assert plan.json_schema is not None
    assert plan.json_schema["properties"]["name"] == {"const": "get_time"}


def test_unknown_named_function_is_rejected() -> None:
    with pytest.raises(InvalidRequestError):
        plan_tools(USER, (WEATHER,), "nope", native=False)


def test_native_templates_get_tools_directly() -> None:
    plan = plan_tools(USER, (WEATHER,), "auto", native=True)
    assert plan.mode == "native" and plan.tools == (WEATHER,) and plan.json_schema is None


def test_none_flattens_earlier_tool_turns() -> None:
    messages = (
        *USER,
        Message(role="assistant", tool_calls=(ToolCall("c1", "get_weather", '{"city":"Lyon"}'),)),
        Message(role="tool", content="21C", tool_call_id="c1"),
    )
    plan = plan_tools(messages, (WEATHER,), "none", native=False)
    assert plan.mode == "off"
    assert [m.role for m in plan.messages] == ["user", "assistant", "user"]
    assert "get_weather" in (plan.messages[1].content or "")


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ('{"name": "get_weather", "arguments": {"city": "Lyon"}}', {"city": "Lyon"}),
        ('```json\n{"name":"get_weather","arguments":{}}\n```', {}),
    ],
)
def test_parse_tool_call_accepts_json_calls(text: str, arguments: dict[str, str]) -> None:
    call = parse_tool_call(text, (WEATHER,))
    assert call is not None and call.name == "get_weather"
    assert json.loads(call.arguments) == arguments


@pytest.mark.parametrize(
    "text", ["Sunny.", '{"name": "other", "arguments": {}}', "{broken", '["get_weather"]']
)
def test_parse_tool_call_rejects_other_text(text: str) -> None:
    assert parse_tool_call(text, (WEATHER,)) is None


def test_may_become_call() -> None:
    assert may_become_call("")
    assert may_become_call('  {"na')
    assert may_become_call("``")
    assert not may_become_call("The weather")
