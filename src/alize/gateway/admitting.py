"""Admission: rate limits, then the budget hold, then the slots (:mod:`alize.gateway.pipeline`
calls it between *prepare* and *filter and observe*).

For a generation the hold and the slots are taken *at once* (:meth:`Admission.admit_and_start`):
the hold is a database write (a conditional UPDATE and an insert, one commit: measured at 5-15 ms
on SQLite with ``synchronous=FULL``, most of what the gateway added to the time to first token),
so it runs while the request waits for its slots and the engine starts on the prompt (the
generation fetches its first event from the moment it starts, :class:`alize.streams.Prefetched`).
No event is read before the hold is confirmed, so what a client sees, and what a budget admits,
is what it was when the two ran in turn: a refused hold cancels the engine stream and raises its
429 with nothing held and no row; once the hold is placed the request is admitted, and a slot
refusal or the client leaving meanwhile settles with a row. Embeddings and moderation calls,
with no stream to overlap, take the hold first (:meth:`Admission.admit`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from alize.deployments.admission import Lane
from alize.gateway.auth import Principal
from alize.gateway.budget import Reservation, cost_micros
from alize.gateway.generation import Generation, GenerationService, Prepared
from alize.gateway.observer import Guarded
from alize.gateway.tenancy import Tenancy
from alize.gateway.tickets import Ticket


class Admission:
    def __init__(
        self, generation: GenerationService, tenancy: Tenancy, observer: Guarded, clock: Callable[[], float]
    ) -> None:
        self._generation = generation
        self._tenancy = tenancy
        self._observer = observer
        self._clock = clock

    async def admit(
        self,
        ticket: Ticket,
        principal: Principal | None,
        request_id: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        """Rate limits, then the budget hold of the worst case; either refusal leaves nothing held."""
        await self._limit(ticket, principal, prompt_tokens + completion_tokens)
        try:
            ticket.reservation = await self._reserve(ticket, prompt_tokens, completion_tokens)
        except BaseException:
            await self._unlimit(ticket)
            raise
        ticket.request_id = request_id

    async def _limit(self, ticket: Ticket, principal: Principal | None, tokens: int) -> None:
        if principal is not None:
            ticket.lease = await self._tenancy.limiter.acquire(principal.rate_limit_subjects(), tokens=tokens)

    async def _unlimit(self, ticket: Ticket) -> None:
        if ticket.lease is not None:
            await ticket.lease.release(0)
            ticket.lease = None

    async def _reserve(self, ticket: Ticket, prompt_tokens: int, completion_tokens: int) -> Reservation:
        prices = ticket.prices
        hold = cost_micros(
            prompt_tokens, completion_tokens, prices.input_per_million, prices.output_per_million
        )
        return await self._tenancy.budget.reserve(ticket.project_id, hold)

    async def admit_and_start(
        self, ticket: Ticket, principal: Principal | None, prepared: Prepared, caller: str, lane: Lane
    ) -> Generation:
        """Rate limits, then the budget hold and the slots at once (the module docstring says why
        and what stays as it was)."""
        await self._limit(ticket, principal, prepared.prompt_tokens + prepared.worst_case_completion_tokens)
        reserving = asyncio.ensure_future(
            self._reserve(ticket, prepared.prompt_tokens, prepared.worst_case_completion_tokens)
        )
        starting = asyncio.ensure_future(self._slots(prepared, caller, lane))
        interrupted: BaseException | None = None
        try:
            await asyncio.wait((reserving, starting), return_when=asyncio.FIRST_EXCEPTION)
        except BaseException as exc:  # the client left (cancelled) while waiting
            interrupted = exc
        refused = reserving.done() and reserving.exception() is not None
        if interrupted is not None or refused:
            await _discard(starting)  # no slot is wanted any more
        # the hold decides, whatever happened to the slots: wait for its outcome
        await asyncio.wait([reserving])
        error = reserving.exception()
        if error is not None:
            await _discard(starting)
            await self._unlimit(ticket)
            raise interrupted or error
        ticket.reservation = reserving.result()
        ticket.request_id = prepared.request_id
        if interrupted is not None:
            raise interrupted
        await asyncio.wait([starting])
        generation, queue_s = starting.result()
        self._observer.started(
            ticket.name, ticket.project_id, queue_s=queue_s, cold_start_s=prepared.cold_start_s
        )
        return generation

    async def _slots(self, prepared: Prepared, caller: str, lane: Lane) -> tuple[Generation, float]:
        """Take the slots and start the engine; with the seconds spent waiting for the slots."""
        queued = self._clock()
        generation = await self._generation.start(prepared, caller, lane)
        return generation, self._clock() - queued


async def _discard(starting: asyncio.Future[tuple[Generation, float]]) -> None:
    """Stop a slot wait, or close the generation it already started (its slots and engine
    stream are freed; nothing was settled on it yet). Idempotent."""
    if not starting.done():
        starting.cancel()
    await asyncio.wait([starting])
    if not starting.cancelled() and starting.exception() is None:
        await starting.result()[0].aclose()
