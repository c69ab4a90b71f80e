"""Rate limits (RPM, TPM, concurrency) on the in-process and the Redis backend."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from alize.errors import RateLimitError
from alize.gateway.limits import LimitSpec, MemoryRateLimiter, RateLimiter, Subject, format_duration
from alize.gateway.limits_redis import RedisRateLimiter
from alize.store.testing import redis_test_url, services_required

REDIS_URL = redis_test_url()
SRC = Path(__file__).resolve().parents[2] / "src"


@asynccontextmanager
async def redis_test_prefix() -> AsyncIterator[str]:
    """A unique key prefix on the test Redis; every key under it is deleted afterwards."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError):
        await client.aclose()
        if services_required():
            raise
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    prefix = f"alize-test:{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest_asyncio.fixture
async def redis_prefix() -> AsyncIterator[str]:
    async with redis_test_prefix() as prefix:
        yield prefix


@pytest_asyncio.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    async with redis_test_prefix() as prefix:
        backend = RedisRateLimiter.from_url(REDIS_URL, key_prefix=prefix)
        try:
            yield backend
        finally:
            await backend.aclose()


def _subject(**limits: int) -> list[Subject]:
    return [Subject(f"key:{secrets.token_hex(4)}", LimitSpec(**limits))]


@pytest.mark.asyncio
async def test_requests_per_minute(limiter: RateLimiter) -> None:
    subjects = _subject(rpm=3)
    leases = [await limiter.acquire(subjects, tokens=0) for _ in range(3)]
    assert [lease.headers["x-ratelimit-remaining-requests"] for lease in leases] == ["2", "1", "0"]
    assert leases[0].headers["x-ratelimit-limit-requests"] == "3"
    with pytest.raises(RateLimitError) as info:
        await limiter.acquire(subjects, tokens=0)
    error = info.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert 55 < error.retry_after <= 60
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["Retry-After"] == "60"
    assert "RPM" in error.message
    for lease in leases:  # releasing frees concurrency, not the request window
        await lease.release()
    with pytest.raises(RateLimitError):
        await limiter.acquire(subjects, tokens=0)


@pytest.mark.asyncio
async def test_tokens_are_reserved_then_settled(limiter: RateLimiter) -> None:
    subjects = _subject(tpm=1000)
    first = await limiter.acquire(subjects, tokens=800)
    assert first.headers["x-ratelimit-remaining-tokens"] == "200"
    with pytest.raises(RateLimitError) as info:
        await limiter.acquire(subjects, tokens=300)
    assert "TPM" in info.value.message
    await first.settle(100)  # the request used far fewer tokens than estimated
    await first.settle(5_000)  # a second settle is ignored
    second = await limiter.acquire(subjects, tokens=300)
    assert second.headers["x-ratelimit-remaining-tokens"] == "600"
    with pytest.raises(RateLimitError, match="too large"):
        await limiter.acquire(subjects, tokens=1001)


@pytest.mark.asyncio
async def test_concurrency_slots_are_returned_on_release(limiter: RateLimiter) -> None:
    subjects = _subject(concurrency=2)
    a = await limiter.acquire(subjects, tokens=1)
    async with await limiter.acquire(subjects, tokens=1):
        with pytest.raises(RateLimitError, match="concurrent"):
            await limiter.acquire(subjects, tokens=1)
    third = await limiter.acquire(subjects, tokens=1)
    await a.release()
    await a.release()  # idempotent: must not free a second slot
    await limiter.acquire(subjects, tokens=1)
    with pytest.raises(RateLimitError):
        await limiter.acquire(subjects, tokens=1)
    await third.release()


@pytest.mark.asyncio
async def test_all_subjects_admit_or_none_is_charged(limiter: RateLimiter) -> None:
    key = Subject(f"key:{secrets.token_hex(4)}", LimitSpec(rpm=5))
    project = Subject(f"project:{secrets.token_hex(4)}", LimitSpec(rpm=1))
    await limiter.acquire([key, project], tokens=0)
    for _ in range(3):
        with pytest.raises(RateLimitError):
            await limiter.acquire([key, project], tokens=0)
    lease = await limiter.acquire([key], tokens=0)  # the refused attempts charged nothing to the key
    assert lease.headers["x-ratelimit-remaining-requests"] == "3"


@pytest.mark.asyncio
async def test_unlimited_subjects_cost_nothing(limiter: RateLimiter) -> None:
    lease = await limiter.acquire([Subject("key:free", LimitSpec())], tokens=10**9)
    assert lease.headers == {}
    await lease.release(5)


@pytest.mark.asyncio
async def test_memory_windows_slide_with_time() -> None:
    now = [1000.0]
    limiter = MemoryRateLimiter(clock=lambda: now[0])
    subjects = _subject(rpm=2, tpm=100)
    await limiter.acquire(subjects, tokens=60)
    now[0] += 30
    await limiter.acquire(subjects, tokens=40)
    with pytest.raises(RateLimitError) as info:
        await limiter.acquire(subjects, tokens=10)
    assert info.value.retry_after == pytest.approx(30, abs=0.01)
    now[0] += 30.5  # the first request (and its 60 tokens) left the window
    lease = await limiter.acquire(subjects, tokens=50)
    assert lease.headers["x-ratelimit-remaining-requests"] == "0"
    assert lease.headers["x-ratelimit-remaining-tokens"] == "10"


@pytest.mark.asyncio
async def test_memory_concurrency_leases_expire() -> None:
    now = [0.0]
    limiter = MemoryRateLimiter(lease_ttl_s=10, clock=lambda: now[0])
    subjects = _subject(concurrency=1)
    await limiter.acquire(subjects, tokens=0)  # never released: a crashed request
    with pytest.raises(RateLimitError):
        await limiter.acquire(subjects, tokens=0)
    now[0] = 11
    await limiter.acquire(subjects, tokens=0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (59.999, "59.999s"), (360, "6m0s"), (-1, "0ms")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


_WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from alize.errors import RateLimitError
    from alize.gateway.limits import LimitSpec, Subject
    from alize.gateway.limits_redis import RedisRateLimiter

    async def main(url, prefix, count):
        limiter = RedisRateLimiter.from_url(url, key_prefix=prefix)
        await limiter._redis.ping()  # connect before the start line
        subjects = [Subject("key:shared", LimitSpec(rpm=60))]

        async def one():
            try:
                await limiter.acquire(subjects, tokens=1)
                return 1
            except RateLimitError:
                return 0

        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the start line: both workers are connected
        admitted = sum(await asyncio.gather(*(one() for _ in range(count))))
        await limiter.aclose()
        print(admitted)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.mark.asyncio
async def test_two_processes_sharing_redis_admit_exactly_the_limit(redis_prefix: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            REDIS_URL,
            redis_prefix,
            "100",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:  # wait until each one is connected, then start both at once
        assert p.stdout is not None
        ready = await asyncio.wait_for(p.stdout.readline(), timeout=60)
        assert ready == b"ready\n", ready
    outputs = await asyncio.gather(*(asyncio.wait_for(p.communicate(b"go\n"), timeout=60) for p in procs))
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    counts = [int(out) for out, _ in outputs]
    assert sum(counts) == 60, counts
