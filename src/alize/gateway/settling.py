"""Settling: each admitted request, exactly once, however it ends (finished, engine error,
content filter, client gone, never iterated).

The rate-limit lease is released with the actual tokens, then one transaction writes the ledger
row (an idempotent insert keyed by the request id) and replaces the budget hold by the actual
cost, charged only when the row is new, so a request id seen twice is never billed twice and a
crash can never leave a row without its charge (they were two commits before: one is 2.5-5 ms
on SQLite with ``synchronous=FULL``); the observer hears of each row once. Settling runs in a
task shielded from cancellation, so a disconnect cannot lose it, and :meth:`Settler.drain`
waits for the ones still running at shutdown. The policy pipeline
(:mod:`alize.gateway.pipeline`) calls it at the end of every path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from sqlalchemy.engine import Connection

from alize.domain import Usage
from alize.errors import AlizeError
from alize.gateway.budget import cost_micros
from alize.gateway.generation import Generation
from alize.gateway.metering import UsageStatus
from alize.gateway.observer import Guarded, Settled
from alize.gateway.tenancy import Tenancy
from alize.gateway.tickets import Ticket, label, usage_record


class Settler:
    def __init__(self, tenancy: Tenancy, observer: Guarded, clock: Callable[[], float]) -> None:
        self._tenancy = tenancy
        self._observer = observer
        self._clock = clock
        self._settling: set[asyncio.Task[None]] = set()

    async def drain(self) -> None:
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)

    async def failure(self, ticket: Ticket, exc: BaseException) -> None:
        """Refused at admission (rate limit, budget: no row), or admitted, then failed before any
        output (e.g. queue full, engine down, client gone)."""
        if isinstance(exc, AlizeError):
            self._observer.refused(label(ticket), ticket.project_id, exc.code or exc.error_type)
        if isinstance(exc, asyncio.CancelledError):
            await self.settle(ticket, None, UsageStatus.CLIENT_DISCONNECTED, None)
        else:
            code = exc.code if isinstance(exc, AlizeError) else "internal_error"
            await self.settle(ticket, None, UsageStatus.ERROR, code)

    async def settle(
        self,
        ticket: Ticket,
        generation: Generation | None,
        status: UsageStatus,
        code: str | None,
        *,
        usage: Usage | None = None,
    ) -> None:
        """Release, settle and meter once; shielded so a cancelled request still gets its row."""
        if ticket.settled or ticket.request_id is None:
            return
        ticket.settled = True
        task = asyncio.ensure_future(self._now(ticket, generation, status, code, usage))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        await asyncio.shield(task)

    async def _now(
        self,
        ticket: Ticket,
        generation: Generation | None,
        status: UsageStatus,
        code: str | None,
        usage: Usage | None,
    ) -> None:
        assert ticket.request_id is not None
        if usage is None:
            usage = generation.usage if generation is not None else Usage()
        prices = ticket.prices
        cost = cost_micros(
            usage.prompt_tokens, usage.completion_tokens, prices.input_per_million, prices.output_per_million
        )
        now = self._clock()
        first = generation.first_token_at if generation is not None else None
        reservation = ticket.reservation
        budget = self._tenancy.budget

        def charge(connection: Connection, new: bool) -> None:
            # charged only with a new row (a repeated request id is released, never billed twice)
            if reservation is not None:
                budget.close_with(connection, reservation.id, cost if new else None)

        try:
            if ticket.lease is not None:
                await ticket.lease.release(usage.prompt_tokens + usage.completion_tokens)
        finally:
            record = usage_record(ticket, ticket.request_id, status, code, usage, cost, now, first)
            try:
                new = await self._tenancy.metering.record(record, then=charge)
            except BaseException:
                if reservation is not None:  # the row failed: at least the hold is not left behind
                    with contextlib.suppress(Exception):
                        await budget.release(reservation)
                raise
            if new:  # a batch line run again after a crash is observed once, as it is billed once
                ttft = first - ticket.started if first is not None else None
                self._observer.settled(Settled(record, label(ticket), now - ticket.started, ttft))
