"""Constrained decoding (json_schema, json_object), tool calls and seeds on the real engine."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import LiveServer

pytestmark = pytest.mark.e2e

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "languages": {
            "type": "array",
            "items": {"type": "string", "enum": ["fr", "en", "de", "es", "it"]},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["name", "age", "languages"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 40}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as shared:
        yield shared


def test_json_schema_validates_for_20_seeds(client: openai.OpenAI) -> None:
    def ask(seed: int) -> tuple[int, str | None, str]:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Describe a European software engineer."}],
            max_tokens=200,
            temperature=0.9,
            seed=seed,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON, "strict": True},
            },
        )
        return seed, reply.choices[0].finish_reason, reply.choices[0].message.content or ""

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(ask, range(20)))
    for seed, finish, content in replies:
        assert finish == "stop", f"seed {seed}: cut at max_tokens: {content[:200]}"
        jsonschema.validate(json.loads(content), PERSON)


def test_json_object_parses(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object about Paris."}],
        max_tokens=400,
        seed=1,
        response_format={"type": "json_object"},
    )
    # the grammar lets the object close; a reply cut at max_tokens would prove nothing
    assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice_required(client: openai.OpenAI, stream: bool) -> None:
    kwargs = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What's the weather like in Lyon?"}],
        "tools": [WEATHER_TOOL, TIME_TOOL],
        "tool_choice": "required",
        "max_tokens": 80,
        "seed": 3,
    }
    if stream:
        calls = []
        finish = None
        for chunk in client.chat.completions.create(stream=True, **kwargs):  # type: ignore[call-overload]
            if chunk.choices:
                calls.extend(chunk.choices[0].delta.tool_calls or [])
                finish = chunk.choices[0].finish_reason or finish
        names_args = [(c.function.name, c.function.arguments) for c in calls]
    else:
        reply = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
        finish = reply.choices[0].finish_reason
        names_args = [
            (c.function.name, c.function.arguments) for c in reply.choices[0].message.tool_calls or []
        ]
    assert finish == "tool_calls"
    assert len(names_args) == 1
    name, arguments = names_args[0]
    tool = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}[name]
    jsonschema.validate(json.loads(arguments), tool["function"]["parameters"])  # type: ignore[index]


def test_named_function(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What time is it in Berlin?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        # room for the longest call the grammar allows (a 40-character zone, whitespace between
        # tokens): with 60 and no seed, one CI run in many was cut at max_tokens
        max_tokens=200,
        seed=3,
    )
    calls = reply.choices[0].message.tool_calls or []
    assert reply.choices[0].finish_reason == "tool_calls", reply.choices[0].message.content
    assert [c.function.name for c in calls] == ["get_time"]  # type: ignore[union-attr]
    jsonschema.validate(json.loads(calls[0].function.arguments), TIME_TOOL["function"]["parameters"])  # type: ignore[union-attr,index]


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    """A conversation carrying a tool call and its result is accepted and answered."""
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Weather in Lyon?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Lyon","unit":"celsius"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
        ],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=20,
    )
    assert reply.choices[0].message.content


def test_same_seed_same_text_even_under_load(client: openai.OpenAI, server: LiveServer) -> None:
    ask = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a short story about a lighthouse."}],
        "max_tokens": 40,
        "temperature": 0.9,
        "seed": 1234,
    }
    first = client.chat.completions.create(**ask).choices[0].message.content  # type: ignore[call-overload]
    second = client.chat.completions.create(**ask).choices[0].message.content  # type: ignore[call-overload]
    assert first == second

    stop = threading.Event()

    def background() -> None:
        with openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as other:
            while not stop.is_set():
                other.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "Count to ten."}],
                    max_tokens=30,
                    temperature=1.0,
                )

    threads = [threading.Thread(target=background) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        under_load = client.chat.completions.create(**ask).choices[0].message.content  # type: ignore[call-overload]
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert under_load == first
    different = client.chat.completions.create(**{**ask, "seed": 99}).choices[0].message.content  # type: ignore[call-overload]
    assert different != first
