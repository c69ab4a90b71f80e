"""Admission to an engine's slots: a bounded, fair wait queue.

llama.cpp queues excess requests internally without bound; Alizé admits at most ``slots``
sequences per deployment and makes the rest wait here, so that (1) the wait is bounded and
overflow gets a clear 503 ``queue_full`` with ``Retry-After``, and (2) waiting is fair across
callers: each caller (API key, user or client address) has its own FIFO and freed slots go
round-robin between callers, so one client firing 100 requests cannot starve another.

Two lanes. ``interactive`` is everything a client waits on. ``batch`` (the lines of batch jobs)
only takes slots interactive traffic leaves free: a batch waiter is served only when no
interactive request waits, and batch lines never hold more than ``slots - reserve`` slots
(``reserve`` = a quarter of the slots, at least one when there are two or more), so an
interactive request arriving while a batch runs finds a free slot at once instead of queueing
behind a batch line. Batch waiters are bounded by their job's concurrency, not by
``max_waiting``, and wait without the interactive timeout (a batch has hours, not seconds).

A free slot is not enough, though: on a CPU the engine's slots share the same cores, and a batch
line that starts its prompt while an interactive request waits for its first token makes that
token wait for the batch line's prompt too (llama.cpp processes both prompts in one step). So no
batch line *starts* while an interactive request waits for its first token, nor within
``batch_yield_s`` of the last interactive arrival (a conversation's next turn, or the next
caller, usually follows soon). Batch lines already running go on; the lane refills as soon as
interactive traffic pauses. Measured with ``bench/batch.py`` (docs/benchmarks.md): interactive
TTFT p50 during a batch at 1.19x idle with a 1 s yield, against 1.94x with the first-token rule
alone and 1.43x with neither.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from typing import Literal

from alize.errors import QueueFullError

Lane = Literal["interactive", "batch"]


class SlotLease:
    """One granted slot; release exactly once (idempotent), whatever happens to the request."""

    __slots__ = ("_prefilling", "_queue", "_released", "epoch", "granted_at", "lane")

    def __init__(self, queue: FairQueue, lane: Lane = "interactive") -> None:
        self._queue = queue
        self._released = False
        self.granted_at = time.monotonic()
        self.epoch = queue.epoch
        self.lane = lane
        self._prefilling = lane == "interactive"
        queue._held[self.epoch] = queue._held.get(self.epoch, 0) + 1
        if lane == "batch":
            queue.batch_busy += 1
        else:
            queue._interactive_started()

    def first_token(self) -> None:
        """The engine produced this sequence's first token: its prompt no longer needs the cores
        to itself (idempotent; batch leases ignore it)."""
        if self._prefilling:
            self._prefilling = False
            self._queue._first_token()

    def release(self) -> None:
        if not self._released:
            self._released = True
            held = self._queue._held
            held[self.epoch] -= 1
            if not held[self.epoch]:
                del held[self.epoch]
            if self.lane == "batch":
                self._queue.batch_busy -= 1
            else:
                if self._prefilling:
                    self._prefilling = False
                    self._queue.prefilling -= 1
            self._queue._release(time.monotonic() - self.granted_at)


class FairQueue:
    def __init__(self, slots: int, *, max_waiting: int, timeout_s: float, batch_yield_s: float = 0.0) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self.batch_yield_s = batch_yield_s
        #: no batch line starts before this (monotonic): interactive traffic was here just now
        self._batch_held_until = 0.0
        self._batch_wakeup: asyncio.TimerHandle | None = None
        #: interactive sequences admitted that have not produced their first token yet
        self.prefilling = 0
        self.busy = 0
        #: of ``busy``, the slots batch lines hold
        self.batch_busy = 0
        self._batch_waiting: deque[asyncio.Future[SlotLease]] = deque()
        self._waiting: OrderedDict[str, deque[asyncio.Future[SlotLease]]] = OrderedDict()
        self._n_waiting = 0
        self._mean_hold_s = 2.0  # moving average of slot hold time, for Retry-After
        #: leases are stamped with the epoch they were granted in (see :meth:`advance`)
        self.epoch = 0
        self._held: dict[int, int] = {}

    @property
    def waiting(self) -> int:
        return self._n_waiting + len(self._batch_waiting)

    @property
    def batch_slots(self) -> int:
        """The most slots batch lines may hold at once (the rest stay free for interactive use)."""
        reserve = max(1, self.slots // 4) if self.slots >= 2 else 0
        return self.slots - reserve

    def _batch_may_start(self) -> bool:
        return (
            self.busy < self.slots
            and self._n_waiting == 0
            and self.batch_busy < self.batch_slots
            and self.prefilling == 0
            and time.monotonic() >= self._batch_held_until
        )

    def _hold_batch(self) -> None:
        """No batch line starts for ``batch_yield_s`` from now; wake the batch waiters after."""
        if self.batch_yield_s <= 0:
            return
        self._batch_held_until = time.monotonic() + self.batch_yield_s
        if self._batch_wakeup is not None:
            self._batch_wakeup.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # released outside an event loop: nothing can wait on the queue
            return
        # a hair past the deadline, so the monotonic check in _batch_may_start passes
        self._batch_wakeup = loop.call_later(self.batch_yield_s + 0.001, self._start_batch_waiters)

    def _interactive_started(self) -> None:
        self.prefilling += 1
        self._hold_batch()

    def _first_token(self) -> None:
        self.prefilling -= 1
        self._start_batch_waiters()

    def advance(self) -> int:
        """Start a new epoch; returns the one that ended. Used when a deployment's engine is
        swapped: requests granted a slot before the swap may still use the old engine."""
        self.epoch += 1
        return self.epoch - 1

    async def drained(self, epoch: int, *, timeout_s: float, poll_s: float = 0.02) -> bool:
        """Wait until every lease granted in ``epoch`` or before is released (False on timeout)."""
        deadline = time.monotonic() + timeout_s
        while any(e <= epoch for e in self._held):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll_s)
        return True

    def _retry_after(self) -> float:
        return max(1.0, self._mean_hold_s * (self._n_waiting + 1) / max(1, self.slots))

    async def acquire(self, caller: str, lane: Lane = "interactive") -> SlotLease:
        if lane == "batch":
            return await self._acquire_batch()
        if self.busy < self.slots and self._n_waiting == 0:
            self.busy += 1
            return SlotLease(self)
        if self._n_waiting >= self.max_waiting:
            raise QueueFullError(
                f"all {self.slots} slots are busy and {self._n_waiting} requests are waiting; retry later",
                retry_after=self._retry_after(),
            )
        future: asyncio.Future[SlotLease] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(caller, deque()).append(future)
        self._n_waiting += 1
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            self._forget(caller, future)
            raise QueueFullError(
                f"waited {self.timeout_s:.0f} s for a free slot; retry later", retry_after=self._retry_after()
            ) from None
        except asyncio.CancelledError:
            self._forget(caller, future)
            raise

    async def _acquire_batch(self) -> SlotLease:
        if self._batch_may_start() and not self._batch_waiting:
            self.busy += 1
            return SlotLease(self, "batch")
        future: asyncio.Future[SlotLease] = asyncio.get_running_loop().create_future()
        self._batch_waiting.append(future)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                future.result().release()
            else:
                future.cancel()
                if future in self._batch_waiting:
                    self._batch_waiting.remove(future)
            raise

    def _start_batch_waiters(self) -> None:
        """Give free slots to batch waiters while the batch lane may grow."""
        while self._batch_waiting and self._batch_may_start():
            future = self._batch_waiting.popleft()
            if not future.done():
                self.busy += 1
                future.set_result(SlotLease(self, "batch"))

    def _forget(self, caller: str, future: asyncio.Future[SlotLease]) -> None:
        """A waiter gave up: drop it, or hand back the slot it was granted in the meantime."""
        if future.done() and not future.cancelled():
            future.result().release()
            return
        future.cancel()
        queue = self._waiting.get(caller)
        if queue is not None and future in queue:
            queue.remove(future)
            self._n_waiting -= 1
            if not queue:
                del self._waiting[caller]

    def _release(self, held_s: float) -> None:
        self._mean_hold_s = 0.9 * self._mean_hold_s + 0.1 * held_s
        while self._waiting:
            caller, queue = next(iter(self._waiting.items()))
            future = queue.popleft()
            self._n_waiting -= 1
            if queue:
                self._waiting.move_to_end(caller)  # round-robin: this caller goes to the back
            else:
                del self._waiting[caller]
            if not future.done():
                future.set_result(SlotLease(self))  # the slot passes straight to the waiter
                return
        self.busy -= 1
        self._start_batch_waiters()
