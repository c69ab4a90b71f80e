"""The official SDKs (openai sync/async, mistralai, azure-ai-inference) against a live server."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import openai
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.core.credentials import AzureKeyCredential
from mistralai.client import Mistral
from tests.e2e.conftest import MODEL
from tests.e2e.server import LiveServer
from tests.e2e.streaming import assert_one_chunk_per_token, finishes_of, text_of

pytestmark = pytest.mark.e2e
HELLO = [{"role": "user", "content": "Say hello to Marie."}]


def test_openai_sync_not_streamed(server: LiveServer) -> None:
    with openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
        reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)  # type: ignore[arg-type]
        assert reply.object == "chat.completion"
        assert reply.model == MODEL
        assert reply.choices[0].message.role == "assistant"
        assert reply.choices[0].message.content
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage is not None
        assert reply.usage.completion_tokens <= 8
        assert reply.usage.prompt_tokens > 5
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
        assert reply.usage.prompt_tokens_details is not None


def test_openai_sync_streamed_with_usage(server: LiveServer) -> None:
    with openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=HELLO,  # type: ignore[arg-type]
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = text_of(chunks)
        finishes = finishes_of(chunks)
        usage = chunks[-1].usage
        assert text
        assert finishes in (["stop"], ["length"])
        assert usage is not None and 1 <= usage.completion_tokens <= 12
        content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
        assert_one_chunk_per_token(
            len(content_chunks), usage.completion_tokens, text, stopped=finishes == ["stop"]
        )


def test_openai_several_choices_streamed(server: LiveServer) -> None:
    with openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=HELLO,  # type: ignore[arg-type]
            max_tokens=10,
            n=3,
            seed=7,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        texts = ["", "", ""]
        finishes: dict[int, str] = {}
        for chunk in chunks:
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert sorted(finishes) == [0, 1, 2] and all(texts)
        usage = chunks[-1].usage
        assert usage is not None and 3 <= usage.completion_tokens <= 30


def test_openai_async_streamed_and_not(server: LiveServer) -> None:
    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0)
        whole = await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6)  # type: ignore[arg-type]
        stream = await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, stream=True)  # type: ignore[arg-type]
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return whole.choices[0].message.content or "", "".join(parts)

    whole, streamed = asyncio.run(run())
    assert whole and streamed


def test_openai_completions_and_models(server: LiveServer) -> None:
    with openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
        reply = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5)
        assert reply.object == "text_completion"
        assert reply.choices[0].text
        assert reply.usage is not None and reply.usage.completion_tokens <= 5
        ids = [m.id for m in client.models.list()]
        assert MODEL in ids
        assert client.models.retrieve(MODEL).id == MODEL


def test_mistral_complete_stream_and_fim_error(server: LiveServer) -> None:
    with Mistral(api_key="unused", server_url=server.url) as client:
        reply = client.chat.complete(model=MODEL, messages=HELLO, max_tokens=8, random_seed=7)  # type: ignore[arg-type]
        assert reply.choices[0].message.content
        assert reply.usage.completion_tokens <= 8
        events = list(client.chat.stream(model=MODEL, messages=HELLO, max_tokens=8))  # type: ignore[arg-type]
        text = "".join(str(e.data.choices[0].delta.content or "") for e in events if e.data.choices)
        assert text
        # SmolLM2 has no FIM tokens: a clear 400, not a crash or a silent fallback.
        with pytest.raises(Exception) as info:
            client.fim.complete(model=MODEL, prompt="def add(a, b):", suffix="    return c")
        assert "400" in str(info.value)
        assert "fill-in-the-middle" in str(info.value)


def test_mistral_safe_prompt_is_applied(server: LiveServer) -> None:
    """safe_prompt prepends a guardrail system prompt: the prompt grows by its tokens."""
    with Mistral(api_key="unused", server_url=server.url) as client:
        plain = client.chat.complete(model=MODEL, messages=HELLO, max_tokens=1)  # type: ignore[arg-type]
        safe = client.chat.complete(model=MODEL, messages=HELLO, max_tokens=1, safe_prompt=True)  # type: ignore[arg-type]
        assert safe.usage.prompt_tokens > plain.usage.prompt_tokens + 10


def test_azure_ai_inference(server: LiveServer) -> None:
    client = ChatCompletionsClient(endpoint=server.url + "/models", credential=AzureKeyCredential("unused"))
    reply = client.complete(messages=HELLO, max_tokens=8)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens <= 8
    info = client.get_model_info()
    assert info.model_name == MODEL
    assert info.model_type == "chat-completion"


def test_terminal_chat_streams_a_reply(server: LiveServer) -> None:
    """`alize chat` against the live server: a prompt in, a streamed reply out, /exit quits."""
    result = subprocess.run(
        [sys.executable, "-m", "alize.cli.main", "chat", "--url", server.url, "--max-tokens", "8"],
        input="Say bonjour.\n/exit\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    reply = result.stdout.split("assistant> ", 1)[1].split("you> ", 1)[0].strip()
    assert reply, result.stdout


def test_terminal_chat_reports_an_unknown_model(server: LiveServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alize.cli.main", "chat", "--url", server.url, "--model", "nope"],
        input="Hi\n/exit\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "error 404" in result.stderr and "does not exist" in result.stderr
