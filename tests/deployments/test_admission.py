"""The fair wait queue in front of engine slots."""

from __future__ import annotations

import asyncio

import pytest

from alize.deployments.admission import FairQueue
from alize.errors import QueueFullError


async def test_grants_up_to_slots_then_queues() -> None:
    queue = FairQueue(2, max_waiting=4, timeout_s=5)
    a = await queue.acquire("x")
    b = await queue.acquire("x")
    waiter = asyncio.create_task(queue.acquire("x"))
    await asyncio.sleep(0)
    assert not waiter.done() and queue.waiting == 1
    a.release()
    c = await asyncio.wait_for(waiter, 1)
    assert queue.busy == 2 and queue.waiting == 0
    b.release()
    c.release()
    assert queue.busy == 0


async def test_release_is_idempotent() -> None:
    queue = FairQueue(1, max_waiting=1, timeout_s=5)
    lease = await queue.acquire("x")
    lease.release()
    lease.release()
    assert queue.busy == 0


async def test_full_queue_raises_with_retry_after() -> None:
    queue = FairQueue(1, max_waiting=1, timeout_s=5)
    await queue.acquire("x")
    waiting = asyncio.create_task(queue.acquire("x"))
    await asyncio.sleep(0)
    with pytest.raises(QueueFullError) as info:
        await queue.acquire("y")
    assert info.value.status_code == 503
    assert int(info.value.headers["Retry-After"]) >= 1
    waiting.cancel()


async def test_round_robin_between_callers() -> None:
    """A caller with many waiting requests does not starve one that arrives later."""
    queue = FairQueue(1, max_waiting=10, timeout_s=5)
    held = await queue.acquire("busy")
    order: list[str] = []

    async def want(caller: str) -> None:
        lease = await queue.acquire(caller)
        order.append(caller)
        await asyncio.sleep(0)
        lease.release()

    tasks = [asyncio.create_task(want("busy")) for _ in range(4)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(want("quiet")))
    await asyncio.sleep(0)
    held.release()
    await asyncio.gather(*tasks)
    assert order.index("quiet") <= 1
    assert queue.busy == 0


async def test_cancelled_waiter_leaves_no_trace() -> None:
    queue = FairQueue(1, max_waiting=2, timeout_s=5)
    held = await queue.acquire("x")
    waiter = asyncio.create_task(queue.acquire("y"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert queue.waiting == 0
    held.release()
    assert queue.busy == 0


async def test_wait_timeout_is_queue_full() -> None:
    queue = FairQueue(1, max_waiting=2, timeout_s=0.05)
    await queue.acquire("x")
    with pytest.raises(QueueFullError):
        await queue.acquire("y")
    assert queue.waiting == 0
