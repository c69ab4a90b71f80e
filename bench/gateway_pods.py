"""One TPM limit, two gateway processes: how many tokens get through in total.

LiteLLM's proxy counts a deployment's ``tpm`` in each process (without its Redis), so two proxies
with a 170 TPM limit admit about 340 tokens a minute; two ``alize serve`` on one PostgreSQL and
Redis (``alize-shared``) admit at most 170 in total. Requests go one at a time, alternating between
the two processes (so each proxy has counted the previous reply's tokens before the next request),
until each process has refused one; the fake upstream's replies are 17 tokens each (12 prompt + 5
completion). LiteLLM does not answer 429 at its TPM limit: its router holds the request and
retries until the minute's bucket rolls over, so a request unanswered after 5 s counts as refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import log
from alize.store.testing import postgres_test_url, redis_test_url
from gateway_systems import (
    Running,
    ensure_litellm,
    litellm_config,
    postgres_schema,
    start_alize,
    start_litellm,
)
from gateway_wire import RawClient, chat_request


async def _until_refused(pair: list[Running], total: int, timeout_s: float) -> dict[str, Any]:
    """Alternate between the two processes until each has refused a request (a 429, or no answer
    within ``timeout_s``: LiteLLM's router holds a request over the limit and retries it until
    its per-minute bucket rolls over), at most ``total`` requests."""
    admitted, tokens, per_process = 0, 0, [0, 0]
    refused_by: list[int | str | None] = [None, None]
    clients = [RawClient(t.host, t.port) for t in pair]
    try:
        for i in range(total):
            side = i % 2
            if refused_by[side] is not None:
                side = 1 - side
            if refused_by[side] is not None:
                break
            target, client = pair[side], clients[side]
            request = chat_request(
                target.host, target.port, target.path, target.key, stream=False, model="fake"
            )
            try:
                timing = await asyncio.wait_for(client.send(request), timeout_s)
            except TimeoutError:
                await client.close()
                refused_by[side] = f"no answer within {timeout_s:g} s"
                continue
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                await client.close()
                refused_by[side] = f"connection lost ({type(exc).__name__})"
                continue
            if timing.status == 200:
                admitted += 1
                per_process[side] += 1
                tokens += int(json.loads(timing.body)["usage"]["total_tokens"])
            else:
                refused_by[side] = timing.status
            await asyncio.sleep(0.05)  # a proxy that counts tokens after replying has done so
    finally:
        for client in clients:
            await client.close()
    return {
        "admitted": admitted,
        "admitted_per_process": per_process,
        "refused_with": refused_by,
        "tokens_admitted": tokens,
    }


async def _fresh_minute() -> None:
    """LiteLLM's TPM buckets are calendar minutes: start early in one, so the run stays in it."""
    second = time.time() % 60
    if second > 20:
        await asyncio.sleep(60 - second + 0.5)


async def per_pod_tpm(upstream_port: int, *, tpm: int, total: int, litellm_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"tpm_limit": tpm, "processes": 2, "requests": total}
    pair: list[Running] = []
    try:
        python = ensure_litellm(litellm_version)
        config = litellm_config(upstream_port, tpm=tpm)
        pair = [start_litellm(python, upstream_port, name=f"litellm-pod{i}", config=config) for i in range(2)]
        log("per-pod TPM: two LiteLLM proxies")
        await _fresh_minute()
        out["litellm"] = await _until_refused(pair, total, timeout_s=5)
    except Exception as exc:
        out["litellm"] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
    finally:
        for running in pair:
            running.server.stop()
    pair = []
    try:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(postgres_schema(postgres_test_url()))
            env = {
                "ALIZE_DATABASE_URL": url,
                "ALIZE_REDIS_URL": redis_test_url(),
                "ALIZE_SECRET_KEY": "bench-" * 6,
            }
            first_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alize-pod0-")))
            first = start_alize("alize-pod0", upstream_port, first_dir, env, limits=(10_000_000, tpm))
            pair.append(first)
            second_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alize-pod1-")))
            pair.append(
                start_alize("alize-pod1", upstream_port, second_dir, env, configure=False, key=first.key)
            )
            log("per-pod TPM: two Alizé gateways on one PostgreSQL and Redis")
            out["alize-shared"] = await _until_refused(pair, total, timeout_s=5)
    except Exception as exc:
        out["alize-shared"] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
    finally:
        for running in pair:
            running.server.stop()
    return out
