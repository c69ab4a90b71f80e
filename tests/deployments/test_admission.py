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


async def test_batch_lane_leaves_a_quarter_of_the_slots_to_interactive_traffic() -> None:
    queue = FairQueue(8, max_waiting=4, timeout_s=5)
    assert queue.batch_slots == 6
    batch = [await queue.acquire("b", "batch") for _ in range(6)]
    seventh = asyncio.create_task(queue.acquire("b", "batch"))
    await asyncio.sleep(0)
    assert not seventh.done() and queue.batch_busy == 6
    # interactive requests still find free slots at once
    interactive = [await asyncio.wait_for(queue.acquire("i"), 0.1) for _ in range(2)]
    assert queue.busy == 8
    for lease in interactive:
        lease.first_token()
    interactive[0].release()
    batch[0].release()  # the waiting batch line takes a batch slot, never the freed reserve
    lease = await asyncio.wait_for(seventh, 1)
    assert lease.lane == "batch" and queue.batch_busy == 6 and queue.busy == 7
    for held in [*batch[1:], lease, interactive[1]]:
        held.release()
    assert (queue.busy, queue.batch_busy) == (0, 0)


async def test_a_freed_slot_goes_to_an_interactive_waiter_before_a_batch_waiter() -> None:
    queue = FairQueue(2, max_waiting=4, timeout_s=5)
    assert queue.batch_slots == 1
    first = await queue.acquire("b", "batch")
    other = await queue.acquire("i")
    other.first_token()
    batch_waiter = asyncio.create_task(queue.acquire("b", "batch"))
    interactive_waiter = asyncio.create_task(queue.acquire("i"))
    await asyncio.sleep(0)
    first.release()
    granted = await asyncio.wait_for(interactive_waiter, 1)
    granted.first_token()
    await asyncio.sleep(0)
    assert granted.lane == "interactive" and not batch_waiter.done()
    granted.release()
    assert (await asyncio.wait_for(batch_waiter, 1)).lane == "batch"
    other.release()


async def test_a_cancelled_batch_waiter_takes_nothing() -> None:
    queue = FairQueue(1, max_waiting=1, timeout_s=5)
    held = await queue.acquire("i")
    waiter = asyncio.create_task(queue.acquire("b", "batch"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    assert (queue.busy, queue.batch_busy, queue.waiting) == (0, 0, 0)


async def test_no_batch_line_starts_while_an_interactive_request_waits_for_its_first_token() -> None:
    queue = FairQueue(4, max_waiting=4, timeout_s=5)
    interactive = await queue.acquire("i")
    batch = asyncio.create_task(queue.acquire("b", "batch"))
    await asyncio.sleep(0)
    assert not batch.done() and queue.prefilling == 1  # three slots free, but its prompt runs
    interactive.first_token()
    interactive.first_token()  # idempotent
    lease = await asyncio.wait_for(batch, 1)
    assert lease.lane == "batch" and queue.prefilling == 0
    lease.release()
    interactive.release()
    assert (queue.busy, queue.batch_busy, queue.prefilling) == (0, 0, 0)


async def test_an_interactive_request_released_before_its_first_token_lets_the_batch_go() -> None:
    queue = FairQueue(4, max_waiting=4, timeout_s=5)
    interactive = await queue.acquire("i")
    batch = asyncio.create_task(queue.acquire("b", "batch"))
    await asyncio.sleep(0)
    assert not batch.done()
    interactive.release()  # e.g. the client went away during the prompt
    assert (await asyncio.wait_for(batch, 1)).lane == "batch"
    assert queue.prefilling == 0


async def test_batch_starts_yield_for_a_while_after_each_interactive_arrival() -> None:
    queue = FairQueue(4, max_waiting=4, timeout_s=5, batch_yield_s=0.2)
    interactive = await queue.acquire("i")
    interactive.first_token()
    interactive.release()
    batch = asyncio.create_task(queue.acquire("b", "batch"))
    await asyncio.sleep(0.05)
    assert not batch.done()  # inside the yield window, with every slot free
    # nothing is released after this point: the queue's own timer lets the batch line in
    assert (await asyncio.wait_for(batch, 2)).lane == "batch"
    running = await asyncio.wait_for(queue.acquire("b", "batch"), 0.1)  # no arrival since: at once
    assert queue.batch_busy == 2
    for lease in (running, batch.result()):
        lease.release()
