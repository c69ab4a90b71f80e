"""What one call to an engine's upstream costs the gateway's CPU, per HTTP client, side by side.

The gateway calls its engines over HTTP/1.1 on every request (the llama.cpp worker twice: the
prompt count, then the generation stream). On a 2-core machine the CPU a call costs is latency
the client waits for, so this measures the client-side CPU time (``time.process_time``) and the
wall time of N sequential calls against the same fake upstream of ``bench/gateway_wire.py``
(run in its own process), for each client in turn, interleaved over several rounds:

* ``httpx``: an ``httpx.AsyncClient`` as the engines used it (keep-alive, streamed body read
  line by line);
* ``lean``: :class:`alize.engines.lean_http.LeanHttpClient`, what the engines use for plain http;
* ``raw``: the raw asyncio client of ``bench/gateway_wire.py`` (reads bytes, parses no lines:
  the floor).

Usage::

    python bench/http_clients.py [--calls 2000] [--rounds 3] [--out bench/results/http_clients.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from _common import CACHE_DIR, RESULTS_DIR, ManagedServer, free_port, log, machine_info
from alize.engines.lean_http import LeanHttpClient
from gateway_wire import RawClient

BODY = {"model": "fake", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}

Call = Callable[[bool], Awaitable[int]]


async def _httpx_calls(port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(30.0, connect=5.0))

    async def call(stream: bool) -> int:
        body = {**BODY, "stream": stream}
        if not stream:
            response = await client.post("/v1/chat/completions", json=body)
            return len(response.content)
        lines = 0
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for _ in response.aiter_lines():
                lines += 1
        return lines

    return call, client.aclose


async def _lean_calls(port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    client = LeanHttpClient(f"http://127.0.0.1:{port}", timeout_s=30.0, connect_timeout_s=5.0)

    async def call(stream: bool) -> int:
        body = {**BODY, "stream": stream}
        if not stream:
            response = await client.send("POST", "/v1/chat/completions", json_body=body)
            return len(response.content)
        lines = 0
        response = await client.send("POST", "/v1/chat/completions", json_body=body, stream=True)
        try:
            async for _ in response.aiter_lines():
                lines += 1
        finally:
            await response.aclose()
        return lines

    return call, client.aclose


async def _raw_calls(port: int) -> tuple[Call, Callable[[], Awaitable[None]]]:
    client = RawClient("127.0.0.1", port)

    def request(stream: bool) -> bytes:
        body = json.dumps({**BODY, "stream": stream}).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def call(stream: bool) -> int:
        timing = await client.send(request(stream))
        return len(timing.body)

    return call, client.close


CLIENTS = {"httpx": _httpx_calls, "lean": _lean_calls, "raw": _raw_calls}


async def _measure(name: str, port: int, calls: int, stream: bool) -> dict[str, float]:
    call, close = await CLIENTS[name](port)
    try:
        for _ in range(50):  # warm: connection open, code paths hot
            await call(stream)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            await call(stream)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await close()
    return {"cpu_ms_per_call": cpu / calls * 1000, "wall_ms_per_call": wall / calls * 1000}


async def _run(calls: int, rounds: int, port: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float]]] = {}
    for round_no in range(rounds):
        for stream in (False, True):
            order = list(CLIENTS) if round_no % 2 == 0 else list(reversed(CLIENTS))
            for name in order:
                key = f"{name}/{'stream' if stream else 'json'}"
                samples.setdefault(key, []).append(await _measure(name, port, calls, stream))
                log(f"round {round_no + 1}/{rounds} {key}: {samples[key][-1]['cpu_ms_per_call']:.3f} ms CPU")
    summary: dict[str, Any] = {}
    for key, rows in samples.items():
        cpu = [r["cpu_ms_per_call"] for r in rows]
        wall = [r["wall_ms_per_call"] for r in rows]
        summary[key] = {
            "cpu_ms_per_call_median": statistics.median(cpu),
            "cpu_ms_per_call_min": min(cpu),
            "cpu_ms_per_call_max": max(cpu),
            "wall_ms_per_call_median": statistics.median(wall),
            "rounds": rows,
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per client per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (order alternates)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "http_clients.json")
    args = parser.parse_args()
    port = free_port()
    upstream = ManagedServer(
        "fake-upstream",
        [sys.executable, str(Path(__file__).with_name("gateway_wire.py")), str(port)],
        None,
        CACHE_DIR / "logs" / "http-clients-upstream.log",
    )
    upstream.start()
    try:
        upstream.wait_ready(f"http://127.0.0.1:{port}/v1/models", 30)
        started = machine_info()
        results = asyncio.run(_run(args.calls, args.rounds, port))
    finally:
        upstream.stop()
    report = {
        "benchmark": "http_clients",
        "command": " ".join(["python", "bench/http_clients.py", *sys.argv[1:]]),
        "machine": started,
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for key, row in results.items():
        cpu = f"{row['cpu_ms_per_call_median']:.3f} ms/call"
        spread = f"min {row['cpu_ms_per_call_min']:.3f}, max {row['cpu_ms_per_call_max']:.3f}"
        print(f"{key:14s} CPU {cpu} ({spread}); wall {row['wall_ms_per_call_median']:.3f} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
