"""Serving behaviour on the real engine: concurrency, usage, disconnects, queue bound, prompt cache,
and a crashed worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import LiveServer
from tests.e2e.streaming import assert_one_chunk_per_token

pytestmark = pytest.mark.e2e


def _body(content: str, max_tokens: int, *, stream: bool = True, **extra: object) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": {"include_usage": True},
        **extra,
    }


async def _stream(client: httpx.AsyncClient, body: dict[str, object]) -> dict[str, object]:
    """Returns the text, content-chunk count, finish reason, usage and time to first token."""
    started = time.perf_counter()
    ttft = None
    text, chunks, finish, usage = "", 0, None, None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk["choices"]:
                piece = choice["delta"].get("content")
                if piece:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    text += piece
                    chunks += 1
                finish = choice.get("finish_reason") or finish
    return {"text": text, "chunks": chunks, "finish": finish, "usage": usage, "ttft": ttft}


def test_32_concurrent_mixed_requests_complete_with_exact_usage(server: LiveServer) -> None:
    lengths = [4, 16, 48, 96] * 8

    async def run() -> list[dict[str, object]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
            prompt_tokens = {}
            for n in set(lengths):  # the same prompt alone, for the expected prompt size
                alone = await client.post(
                    "/v1/chat/completions", json=_body(f"Write {n} words about rivers.", 1, stream=False)
                )
                prompt_tokens[n] = alone.json()["usage"]["prompt_tokens"]
            results = await asyncio.gather(
                *(
                    _stream(client, _body(f"Write {n} words about rivers.", n, temperature=0.8, seed=i))
                    for i, n in enumerate(lengths)
                )
            )
            for n, result in zip(lengths, results, strict=True):
                result["expected_prompt"] = prompt_tokens[n]
            return list(results)

    results = asyncio.run(run())
    assert len(results) == 32
    for n, result in zip(lengths, results, strict=True):
        usage = result["usage"]
        assert isinstance(usage, dict)
        assert usage["prompt_tokens"] == result["expected_prompt"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert 1 <= usage["completion_tokens"] <= n
        if result["finish"] == "length":
            assert usage["completion_tokens"] == n
        assert_one_chunk_per_token(
            int(result["chunks"]),
            usage["completion_tokens"],
            str(result["text"]),
            stopped=result["finish"] == "stop",
        )


def _state(server: LiveServer) -> dict[str, Any]:
    """The deployment's live state from the admin API (busy slots, waiting requests, workers)."""
    r = httpx.get(f"{server.url}/admin/api/deployments/{MODEL}", timeout=30)
    assert r.status_code == 200, r.text
    state: dict[str, Any] = r.json()["state"]
    return state


async def _until(server: LiveServer, check: Callable[[dict[str, Any]], bool]) -> None:
    """Poll the admin state until ``check`` holds: waiting on an event, not on the clock."""
    for _ in range(600):
        if check(await asyncio.to_thread(_state, server)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"state never reached: {_state(server)}")


def _ledger(server: LiveServer, limit: int) -> list[tuple[str, int]]:
    """The last ``limit`` usage rows (status, completion tokens), newest first."""
    database = server.log_path.parent / f"data-{server.url.rsplit(':', 1)[1]}" / "alize.db"
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT status, completion_tokens FROM usage ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
    return [(str(status), int(tokens)) for status, tokens in rows]


async def _ignore_eos_lengths(server: LiveServer) -> tuple[int, int]:
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        short = "Answer with one word: is the sky blue?"
        plain = await _stream(client, _body(short, 48, temperature=0))
        forced = await _stream(client, _body(short, 48, temperature=0, ignore_eos=True))
    assert forced["finish"] == "length"
    plain_usage, forced_usage = plain["usage"], forced["usage"]
    assert isinstance(plain_usage, dict) and isinstance(forced_usage, dict)
    return plain_usage["completion_tokens"], forced_usage["completion_tokens"]


def test_ignore_eos_runs_the_reply_to_max_tokens(server: LiveServer) -> None:
    """llama.cpp's extension reaches the worker (it was dropped: a load test asking for replies
    of a known length got the model's short answer)."""
    plain, forced = asyncio.run(_ignore_eos_lengths(server))
    assert plain < 48 and forced == 48, (plain, forced)


def test_disconnect_frees_the_slot_for_the_next_waiting_request(one_slot_server: LiveServer) -> None:
    async def run() -> dict[str, object]:
        async with httpx.AsyncClient(base_url=one_slot_server.url, timeout=120) as client:
            # A schema that needs 900 numbers cannot finish before max_tokens: the first request
            # surely holds the only slot until its client goes away.
            long_reply = {"type": "array", "items": {"type": "integer"}, "minItems": 900}
            first = client.stream(
                "POST",
                "/v1/chat/completions",
                json=_body(
                    "List numbers.",
                    1000,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": "n", "schema": long_reply},
                    },
                ),
            )
            response = await first.__aenter__()
            seen = 0
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                    seen += 1
                    if seen == 3:
                        break
            # The second request waits for the only slot, which the first still holds.
            waiting = asyncio.create_task(_stream(client, _body("Say yes.", 3)))
            await _until(one_slot_server, lambda s: s["busy_slots"] == 1 and s["waiting"] == 1)
            assert not waiting.done()
            await response.aclose()
            await first.__aexit__(None, None, None)
            return await waiting

    result = asyncio.run(run())
    assert result["usage"] is not None
    # the abandoned request stopped when its client left: had it kept the slot, the waiting one
    # would have been served only after all 1000 tokens of it, whatever the machine's speed
    rows = dict(_ledger(one_slot_server, 2))
    assert set(rows) == {"client_disconnected", "success"}, rows
    assert rows["client_disconnected"] < 1000


def test_a_dropped_non_streamed_request_stops_at_once_and_is_metered_as_disconnected(
    one_slot_server: LiveServer,
) -> None:
    """Issue 17, fault 1: the client of a non-streamed request gives up after 2 s."""
    body = _body("Write a very long story about the sea, with many chapters.", 1000, stream=False)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{one_slot_server.v1}/chat/completions", json=body, timeout=httpx.Timeout(120, read=2.0))
    # the one slot serves the next request (a held slot would keep it waiting for 1000 tokens)
    r = httpx.post(
        f"{one_slot_server.v1}/chat/completions", json=_body("Say yes.", 3, stream=False), timeout=120
    )
    assert r.status_code == 200
    (next_status, _), (status, tokens) = _ledger(one_slot_server, 2)
    assert (status, next_status) == ("client_disconnected", "success")
    assert tokens < 1000  # it stopped when its client left, whatever the machine's speed


def test_queue_bound_returns_503_queue_full(one_slot_server: LiveServer) -> None:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=one_slot_server.url, timeout=120) as client:
            body = _body("Count slowly to one hundred.", 60, stream=False)
            tasks = [asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(4)]
            return list(await asyncio.gather(*tasks))

    responses = asyncio.run(run())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 2  # one running, one waiting (queue_max = 1)
    assert statuses.count(503) == 2
    for r in responses:
        if r.status_code == 503:
            error = r.json()["error"]
            assert error["code"] == "queue_full"
            assert error["type"] == "service_unavailable"
            assert int(r.headers["retry-after"]) >= 1
            assert set(error) >= {"message", "type", "param", "code"}


def test_shared_long_system_prompt_is_served_from_the_prompt_cache(server: LiveServer) -> None:
    system = " ".join(
        f"Rule {i}: answer politely, precisely and briefly about topic number {i}." for i in range(110)
    )

    async def run() -> tuple[dict[str, object], dict[str, object]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:

            def body(question: str) -> dict[str, object]:
                return {
                    "model": MODEL,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": question},
                    ],
                    "max_tokens": 4,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }

            cold = await _stream(client, body("What is rule 3?"))
            warm = await _stream(client, body("What is rule 7?"))
            return cold, warm

    cold, warm = asyncio.run(run())
    cold_usage, warm_usage = cold["usage"], warm["usage"]
    assert isinstance(cold_usage, dict) and isinstance(warm_usage, dict)
    assert cold_usage["prompt_tokens"] >= 1500
    assert cold_usage["prompt_tokens_details"]["cached_tokens"] < 1500  # the first one computed it
    assert warm_usage["prompt_tokens_details"]["cached_tokens"] >= 1500  # the second reused it


def test_a_crashed_worker_is_restarted_and_serves_the_next_request(one_slot_server: LiveServer) -> None:
    """A request arriving after a crash is not refused: the engine starts a fresh worker for it
    (a request *in flight* during the crash ends with a 503-class error event, next test)."""
    pids = one_slot_server.worker_pids()
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)  # what a llama.cpp assertion does to the process
    seen = f"llama.cpp worker {pids[0]} exited with code -9"
    for _ in range(600):  # the gateway noticed (an event in its log, not a fixed wait)
        if seen in one_slot_server.log():
            break
        time.sleep(0.05)
    assert seen in one_slot_server.log()
    with httpx.Client(base_url=one_slot_server.url, timeout=120) as client:
        reply = client.post("/v1/chat/completions", json=_body("Hi", 2, stream=False))
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] >= 1
        assert client.get("/health").status_code == 200
    fresh = one_slot_server.worker_pids()
    assert len(fresh) == 1 and fresh != pids


def test_worker_crash_mid_stream_ends_with_an_error_event(one_slot_server: LiveServer) -> None:
    with httpx.Client(base_url=one_slot_server.url, timeout=60) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        events = []
        with client.stream(
            "POST", "/v1/chat/completions", json=_body("Tell me a long story.", 500)
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:
                        for pid in one_slot_server.worker_pids():
                            os.kill(pid, signal.SIGKILL)
    assert events[-1] != "[DONE]"
    error = json.loads(events[-1])["error"]
    assert error["code"] in ("engine_unavailable", "engine_error")
    assert set(error) >= {"message", "type", "param", "code"}
