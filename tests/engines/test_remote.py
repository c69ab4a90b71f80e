"""The remote engine against scripted upstreams: an httpx MockTransport for request shapes, error
mapping and retries, and a raw loopback socket server for timeouts and early close."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from alize.domain import (
    FimPrompt,
    FinishReason,
    GenerationRequest,
    Message,
    SamplingParams,
    ToolSpec,
)
from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry
from alize.engines.remote import RemoteEngine
from alize.engines.remote_wire import estimate_prompt_tokens
from alize.errors import (
    EngineUnavailableError,
    InvalidRequestError,
    RateLimitError,
    UnsupportedFeatureError,
    UpstreamError,
)

pytestmark = pytest.mark.timeout(30)

KEY = "sk-upstream-secret-123"
Handler = Callable[[httpx.Request], httpx.Response]


def config(**options: str) -> EngineConfig:
    base = {
        "base_url": "http://upstream.test/v1",
        "upstream_model": "up-model",
        "api_key_env": "ALIZE_TEST_UPSTREAM_KEY",
        "tasks": "chat,completion,embeddings",
        "embedding_dimensions": "3",
        "retry_backoff_s": "0",
    }
    base.update(options)
    return EngineConfig(kind="remote", ctx_per_slot=4096, parallel=2, request_timeout_s=5, options=base)


def sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chunk(text: str = "", finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if usage else [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]
    return {"id": "c", "object": "chat.completion.chunk", "choices": choices, "usage": usage}


def models_ok(extra: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": [{"id": "up-model", **(extra or {})}]})


class Upstream:
    """Routes requests to per-path handlers and remembers them."""

    def __init__(self, routes: dict[str, Handler | list[httpx.Response]]) -> None:
        self.routes = routes
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        route = self.routes.get(request.url.path)
        if route is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        if isinstance(route, list):
            return route.pop(0)
        return route(request)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.seen if r.url.path == path]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIZE_TEST_UPSTREAM_KEY", KEY)


def engine(upstream: Upstream, **options: str) -> RemoteEngine:
    return RemoteEngine(config(**options), transport=httpx.MockTransport(upstream))


def chat_request(**params: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id="r1",
        params=SamplingParams(max_tokens=params.pop("max_tokens", 8), **params),
        messages=(Message(role="system", content="Be brief."), Message(role="user", content="Hi there")),
    )


async def collect(eng: RemoteEngine, request: GenerationRequest) -> list[Any]:
    return [d async for d in eng.generate(request)]


def test_registered_as_an_entry_point() -> None:
    assert "remote" in EngineRegistry().kinds
    with pytest.raises(InvalidRequestError, match="base_url"):
        RemoteEngine(EngineConfig(kind="remote"))


async def test_start_reads_capabilities_and_sends_the_key() -> None:
    upstream = Upstream({"/v1/models": lambda r: models_ok({"max_model_len": 2048})})
    eng = engine(upstream)
    info = await eng.start()
    assert info.context_length == 2048  # the upstream's limit is smaller than the card's
    assert info.supports_chat and info.supports_embeddings and not info.supports_tools
    assert info.max_sequences == 2 and info.embedding_dimensions == 3
    assert upstream.seen[0].headers["authorization"] == f"Bearer {KEY}"
    await eng.stop()
    await eng.stop()  # idempotent


async def test_a_missing_key_or_model_or_upstream_is_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALIZE_TEST_UPSTREAM_KEY")
    with pytest.raises(EngineUnavailableError, match="ALIZE_TEST_UPSTREAM_KEY"):
        await engine(Upstream({"/v1/models": lambda r: models_ok()})).start()
    monkeypatch.setenv("ALIZE_TEST_UPSTREAM_KEY", KEY)
    other = Upstream({"/v1/models": lambda r: httpx.Response(200, json={"data": [{"id": "else"}]})})
    with pytest.raises(EngineUnavailableError, match="does not serve 'up-model'"):
        await engine(other).start()
    denied = Upstream({"/v1/models": lambda r: httpx.Response(401, json={"error": {"message": "bad key"}})})
    with pytest.raises(EngineUnavailableError, match="refused the credentials") as caught:
        await engine(denied).start()
    assert KEY not in caught.value.message

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    attempts = Upstream({"/v1/models": refuse})
    with pytest.raises(EngineUnavailableError, match=r"cannot reach the upstream upstream\.test"):
        await engine(attempts, max_retries="2").start()
    assert len(attempts.seen) == 3  # one try and two bounded retries
    # an upstream with no model list is accepted
    bare = Upstream({})
    assert (await engine(bare).start()).context_length == 4096


async def test_chat_maps_parameters_and_streams_exact_usage() -> None:
    stream = sse(
        chunk("Hel"),
        chunk("lo"),
        chunk("", finish="stop"),
        chunk(usage={"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}),
    )
    upstream = Upstream(
        {
            "/v1/models": lambda r: models_ok(),
            "/v1/chat/completions": lambda r: httpx.Response(200, content=stream),
        }
    )
    eng = engine(upstream)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = chat_request(
        temperature=0.2, top_p=0.9, stop=("END",), seed=7, json_schema=schema, frequency_penalty=0.5
    )
    deltas = await collect(eng, request)
    assert "".join(d.text for d in deltas) == "Hello"
    final = deltas[-1]
    assert final.finish_reason is FinishReason.STOP and final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (11, 2)
    body = upstream.bodies("/v1/chat/completions")[0]
    assert body["model"] == "up-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["stop"], body["seed"]) == (0.2, 0.9, ["END"], 7)
    assert body["max_tokens"] == 8 and body["frequency_penalty"] == 0.5
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert body["messages"][1] == {"role": "user", "content": "Hi there"}
    assert "cache_prompt" not in body  # only public OpenAI fields go upstream


async def test_native_tools_are_passed_and_tool_calls_assembled() -> None:
    stream = sse(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "function": {"name": "get_weather", "arguments": '{"ci'},
                            }
                        ]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Nice"}'}}]},
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        chunk(usage={"prompt_tokens": 30, "completion_tokens": 9}),
    )
    upstream = Upstream(
        {
            "/v1/models": lambda r: models_ok(),
            "/v1/chat/completions": lambda r: httpx.Response(200, content=stream),
        }
    )
    eng = engine(upstream, supports_tools="true")
    assert (await eng.start()).supports_tools
    request = chat_request()
    request.tools = (ToolSpec(name="get_weather", parameters={"type": "object"}),)
    request.tool_choice = "required"
    final = (await collect(eng, request))[-1]
    assert final.finish_reason is FinishReason.TOOL_CALLS
    assert final.tool_calls[0].name == "get_weather" and json.loads(final.tool_calls[0].arguments) == {
        "city": "Nice"
    }
    body = upstream.bodies("/v1/chat/completions")[0]
    assert body["tools"][0]["function"]["name"] == "get_weather" and body["tool_choice"] == "required"


async def test_completion_and_fim_bodies_and_missing_usage_is_counted() -> None:
    stream = sse(
        {"choices": [{"index": 0, "text": "a b", "finish_reason": None}]},
        {"choices": [{"index": 0, "text": " c", "finish_reason": "length"}]},
    )
    upstream = Upstream(
        {
            "/v1/models": lambda r: models_ok(),
            "/v1/completions": lambda r: httpx.Response(200, content=stream),
        }
    )
    eng = engine(upstream)
    prompt = GenerationRequest("r", SamplingParams(max_tokens=2), prompt="Once upon")
    deltas = await collect(eng, prompt)
    final = deltas[-1]  # no usage upstream: the streamed pieces and the estimate
    assert final.finish_reason is FinishReason.LENGTH and final.usage is not None
    assert final.usage.completion_tokens == 2 and final.usage.prompt_tokens == estimate_prompt_tokens(prompt)
    fim = GenerationRequest("r", SamplingParams(max_tokens=2), fim=FimPrompt("def f(", "):"))
    await collect(eng, fim)
    first, second = upstream.bodies("/v1/completions")
    assert first["prompt"] == "Once upon" and "suffix" not in first
    assert (second["prompt"], second["suffix"]) == ("def f(", "):")


@pytest.mark.parametrize(
    ("status", "body", "error", "code"),
    [
        (
            400,
            {"error": {"message": "temperature too high", "code": "invalid_value"}},
            InvalidRequestError,
            "upstream_rejected",
        ),
        (
            400,
            {"error": {"message": "too long", "code": "context_length_exceeded"}},
            InvalidRequestError,
            "context_length_exceeded",
        ),
        (422, {"detail": "bad field"}, InvalidRequestError, "upstream_rejected"),
        (429, {"error": {"message": "slow down"}}, RateLimitError, "upstream_rate_limited"),
        (401, {"error": {"message": f"key {KEY} is invalid"}}, UpstreamError, "upstream_error"),
        (404, {"error": {"message": "no such model"}}, UpstreamError, "upstream_error"),
        (500, "<html>boom</html>", UpstreamError, "upstream_error"),
        (503, {"error": {"message": "overloaded"}}, EngineUnavailableError, "engine_unavailable"),
    ],
)
async def test_upstream_errors_become_typed_errors(
    status: int, body: Any, error: type[Exception], code: str
) -> None:
    reply = (
        httpx.Response(status, json=body, headers={"retry-after": "9"})
        if isinstance(body, dict)
        else httpx.Response(status, text=body)
    )
    upstream = Upstream({"/v1/models": lambda r: models_ok(), "/v1/chat/completions": lambda r: reply})
    eng = engine(upstream, max_retries="1")
    with pytest.raises(error) as caught:
        await collect(eng, chat_request())
    assert caught.value.code == code  # type: ignore[attr-defined]
    message = caught.value.message  # type: ignore[attr-defined]
    assert "upstream.test" in message and KEY not in message
    assert caught.value.status_code == {400: 400, 422: 400, 429: 429, 503: 503}.get(status, 502)  # type: ignore[attr-defined]


async def test_retries_only_before_the_reply_starts() -> None:
    ok = sse(chunk("x"), chunk("", "stop"), chunk(usage={"prompt_tokens": 1, "completion_tokens": 1}))
    flaky = Upstream(
        {
            "/v1/models": lambda r: models_ok(),
            "/v1/chat/completions": [
                httpx.Response(502),
                httpx.Response(504),
                httpx.Response(200, content=ok),
            ],
        }
    )
    deltas = await collect(engine(flaky, max_retries="2"), chat_request())
    assert deltas[-1].usage is not None and len(flaky.bodies("/v1/chat/completions")) == 3
    exhausted = Upstream(
        {"/v1/models": lambda r: models_ok(), "/v1/chat/completions": [httpx.Response(502)] * 3}
    )
    with pytest.raises(UpstreamError, match="HTTP 502"):
        await collect(engine(exhausted, max_retries="1"), chat_request())
    assert len(exhausted.bodies("/v1/chat/completions")) == 2
    # an error event after the reply began is not retried: it ends the stream with a 502
    broken = sse(chunk("x"), {"error": {"message": "GPU fell over"}}, done=False)
    midway = Upstream(
        {
            "/v1/models": lambda r: models_ok(),
            "/v1/chat/completions": lambda r: httpx.Response(200, content=broken),
        }
    )
    with pytest.raises(UpstreamError, match="GPU fell over"):
        await collect(engine(midway), chat_request())
    assert len(midway.bodies("/v1/chat/completions")) == 1


async def test_prompt_tokens_from_upstream_tokenize_or_an_estimate_that_errs_high() -> None:
    counting = Upstream(
        {"/v1/models": lambda r: models_ok(), "/tokenize": lambda r: httpx.Response(200, json={"count": 17})}
    )
    eng = engine(counting)
    assert await eng.count_prompt_tokens(chat_request()) == 17
    assert counting.bodies("/tokenize")[0]["messages"][1]["content"] == "Hi there"
    plain = Upstream({"/v1/models": lambda r: models_ok()})
    eng = engine(plain)
    request = chat_request()
    first = await eng.count_prompt_tokens(request)
    assert first == estimate_prompt_tokens(request)
    await eng.count_prompt_tokens(request)
    assert len([r for r in plain.seen if r.url.path == "/tokenize"]) == 1  # asked once, then estimated
    text = "The quick brown fox jumps over the lazy dog. " * 20  # 180 words: ~200 tokens in real tokenizers
    estimate = estimate_prompt_tokens(GenerationRequest("r", SamplingParams(max_tokens=1), prompt=text))
    assert estimate >= 200


async def test_embeddings_in_input_order_with_usage() -> None:
    def embed(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["input"] == ["a", "b"] and body["encoding_format"] == "float"
        data = [{"index": 1, "embedding": [0, 1, 0]}, {"index": 0, "embedding": [1, 0, 0]}]
        return httpx.Response(200, json={"data": data, "usage": {"prompt_tokens": 4, "total_tokens": 4}})

    eng = engine(Upstream({"/v1/models": lambda r: models_ok(), "/v1/embeddings": embed}))
    result = await eng.embed(["a", "b"])
    assert result.vectors == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)) and result.prompt_tokens == 4
    chat_only = engine(Upstream({"/v1/models": lambda r: models_ok()}), tasks="chat")
    with pytest.raises(UnsupportedFeatureError):
        await chat_only.embed(["a"])


# -- a real socket upstream: timeouts and early close ------------------------------------------


def _content_length(head: str) -> int:
    lines = head.split("\r\n")
    return next((int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length")), 0)


def _answer_models(writer: asyncio.StreamWriter) -> None:
    """``GET /v1/models``: the one model the engine asks for."""
    body = json.dumps({"data": [{"id": "up-model"}]}).encode()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
    writer.write(b"content-length: %d\r\n\r\n%s" % (len(body), body))


class LoopbackUpstream:
    """A raw HTTP server on 127.0.0.1 for the engine to call; ``async with`` gives its base URL."""

    server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class SlowUpstream(LoopbackUpstream):
    """A loopback HTTP server: ``/v1/models`` answers at once; chat streams one chunk every 50 ms
    for ever (or never answers, with ``silent``), and records when its client hangs up."""

    def __init__(self, *, silent: bool = False) -> None:
        self.silent = silent
        self.disconnected = asyncio.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            await reader.readexactly(_content_length(head))
            if head.startswith("GET /v1/models"):
                _answer_models(writer)
                await writer.drain()
                return
            if self.silent:
                await reader.read()  # until the client gives up and hangs up
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            while True:
                writer.write(b"data: " + json.dumps(chunk("tok ")).encode() + b"\n\n")
                await writer.drain()
                if reader.at_eof():
                    raise ConnectionResetError
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnected.set()
        finally:
            writer.close()


async def test_closing_the_stream_early_hangs_up_on_the_upstream() -> None:
    upstream = SlowUpstream()
    async with upstream as url:
        eng = RemoteEngine(config(base_url=url))
        stream = eng.generate(chat_request(max_tokens=1000))
        received = [await anext(stream) for _ in range(3)]
        assert all(d.text == "tok " for d in received)
        await stream.aclose()
        await asyncio.wait_for(upstream.disconnected.wait(), timeout=5)
        await eng.stop()


async def test_an_upstream_that_never_answers_times_out_as_a_502() -> None:
    async with SlowUpstream(silent=True) as url:
        cfg = config(base_url=url)
        eng = RemoteEngine(
            EngineConfig(kind="remote", ctx_per_slot=512, request_timeout_s=0.5, options=cfg.options)
        )
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamError, match=r"did not answer within 0\.5 s"):
            await collect(eng, chat_request())
        assert asyncio.get_running_loop().time() - started < 5
        await eng.stop()


async def test_429_and_500_are_retried_honouring_retry_after_and_the_retries_are_told() -> None:
    ok = sse(chunk("x"), chunk("", "stop"), chunk(usage={"prompt_tokens": 1, "completion_tokens": 1}))
    flaky = Upstream(
        {
            "/v1/models": lambda r: models_ok(),
            "/v1/chat/completions": [
                httpx.Response(429, headers={"retry-after": "0.4"}),
                httpx.Response(500),
                httpx.Response(200, content=ok),
            ],
        }
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    deltas = await collect(engine(flaky, max_retries="2"), chat_request())
    assert loop.time() - started >= 0.4  # the upstream's Retry-After, not the zero backoff
    assert [d.retries for d in deltas] == [2] + [0] * (len(deltas) - 1)
    assert len(flaky.bodies("/v1/chat/completions")) == 3
    # a final failure says how many retries it took
    down = Upstream({"/v1/models": lambda r: models_ok(), "/v1/chat/completions": [httpx.Response(500)] * 3})
    with pytest.raises(UpstreamError) as caught:
        await collect(engine(down, max_retries="2", breaker_failures="10"), chat_request())
    assert caught.value.headers["x-alize-retries"] == "2"
    # a Retry-After past the cap is not waited for: the 429 goes to the client at once
    slow = Upstream(
        {
            "/v1/models": lambda r: models_ok(),
            "/v1/chat/completions": [httpx.Response(429, headers={"retry-after": "60"})],
        }
    )
    with pytest.raises(RateLimitError) as limited:
        await collect(engine(slow, max_retries="2"), chat_request())
    assert limited.value.headers["Retry-After"] == "60" and "x-alize-retries" not in limited.value.headers


async def test_the_circuit_opens_after_n_failures_refuses_without_calling_then_half_opens() -> None:
    ok = sse(chunk("x"), chunk("", "stop"), chunk(usage={"prompt_tokens": 1, "completion_tokens": 1}))
    replies: list[httpx.Response] = [httpx.Response(502)] * 3
    upstream = Upstream(
        {
            "/v1/models": lambda r: models_ok(),
            "/v1/chat/completions": lambda r: replies.pop(0) if replies else httpx.Response(200, content=ok),
        }
    )
    eng = engine(upstream, max_retries="0", breaker_failures="3", breaker_cooldown_s="0.3")
    for _ in range(3):
        with pytest.raises(UpstreamError):
            await collect(eng, chat_request())
    assert eng.breaker.state == "open"
    with pytest.raises(EngineUnavailableError) as refused:
        await collect(eng, chat_request())
    assert refused.value.code == "circuit_open"
    assert len(upstream.bodies("/v1/chat/completions")) == 3  # refused without a call
    await asyncio.sleep(0.35)
    deltas = await collect(eng, chat_request())  # the half-open trial succeeds: closed again
    assert deltas[-1].usage is not None and eng.breaker.state == "closed"
    assert len(upstream.bodies("/v1/chat/completions")) == 4


async def test_a_200_with_garbage_or_no_event_stream_is_a_502() -> None:
    for body in (b"<html>proxy error</html>", b"", b"data: {not json\n\n"):
        upstream = Upstream(
            {
                "/v1/models": lambda r: models_ok(),
                "/v1/chat/completions": lambda r, b=body: httpx.Response(200, content=b),  # type: ignore[misc]
            }
        )
        with pytest.raises(UpstreamError, match=r"no event stream|malformed"):
            await collect(engine(upstream), chat_request())


class ChunkedUpstream(LoopbackUpstream):
    """A loopback keep-alive HTTP/1.1 server: chat answers a whole reply as a chunked event
    stream (its last chunk, the terminator, in a separate write after ``[DONE]``); counts the
    connections its clients opened."""

    def __init__(self) -> None:
        self.connections = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                await reader.readexactly(_content_length(head))
                if head.startswith("GET /v1/models"):
                    _answer_models(writer)
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
                writer.write(b"transfer-encoding: chunked\r\n\r\n")
                usage = {"prompt_tokens": 2, "completion_tokens": 1}
                for data in (chunk("hi"), chunk("", "stop"), chunk(usage=usage)):
                    event = b"data: " + json.dumps(data).encode() + b"\n\n"
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                event = b"data: [DONE]\n\n"
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.01)  # the terminating chunk comes a moment after [DONE]
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def test_replies_read_to_their_end_keep_the_upstream_connection_alive() -> None:
    upstream = ChunkedUpstream()
    async with upstream as url:
        eng = RemoteEngine(config(base_url=url))
        for _ in range(5):
            deltas = await collect(eng, chat_request())
            assert "".join(d.text for d in deltas) == "hi"
        # the probe and five replies on one connection: a reply closed unread after [DONE]
        # dropped its connection, and every request opened a new one (6 connections)
        assert upstream.connections == 1
        await eng.stop()


async def test_a_key_that_would_break_the_request_is_a_503_that_does_not_echo_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key pasted with its newline (or worse) into the environment: the lean client refuses
    the header rather than write it, and the error names the variable, never the value."""
    monkeypatch.setenv("ALIZE_TEST_UPSTREAM_KEY", "sk-secret\r\nX-Injected: 1")
    with pytest.raises(EngineUnavailableError, match="ALIZE_TEST_UPSTREAM_KEY") as caught:
        await RemoteEngine(config(base_url="http://127.0.0.1:9/v1")).start()
    assert "sk-secret" not in caught.value.message
