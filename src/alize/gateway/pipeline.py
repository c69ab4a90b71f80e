"""The policy pipeline around the generation service: who may run what, at what cost, and the
one ledger row every admitted request leaves behind.

Order: authorise the deployment (403) → the deployment's input filter, if it has one (400
``content_filter``, or 503 ``content_filter_error`` when the filter fails closed; PII redacted
when the policy says so) → generation validates, loads and counts prompt tokens → *gate*: rate
limits on the key and its project (429 with ``Retry-After``), then the budget holds the worst
case, ``prompt + n * max_tokens`` at the deployment's prices (429 ``insufficient_quota``) →
wait for a slot and generate, through the output filter if the deployment has one
(:mod:`alize.gateway.output_filter`) → settle.

A prompt the input filter refuses is cheap to refuse: it is judged before any model is loaded
or any limit is consumed, and leaves a row with no tokens and no cost (status
``content_filtered``, or ``error`` with code ``content_filter_error``).

Settling happens exactly once per admitted request, whichever way it ends (finished, engine
error, content filter, client gone, never iterated): the rate-limit lease is released with the
actual tokens, the budget hold is replaced by the actual cost, and ``MeteringService.record``
writes the row keyed by the request id (an idempotent insert, so even a second path could not
add a second row). Settling is shielded from cancellation, so a disconnect cannot lose it.
Other requests refused before the gate (401/403/404/400/429) leave no row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from alize.deployments.manager import DeploymentManager, DeploymentSpec
from alize.domain import FinishReason, Usage
from alize.errors import AlizeError, ContentFilterError, ContentFilterUnavailableError
from alize.gateway.auth import Principal, authorize_deployment
from alize.gateway.budget import Reservation, cost_micros
from alize.gateway.embeddings import EmbeddingResult, EmbeddingsService
from alize.gateway.generation import (
    ChatCall,
    ChoiceEvent,
    Gate,
    Generation,
    GenerationService,
    Planned,
    TextCall,
)
from alize.gateway.limits import Lease
from alize.gateway.metering import UsageRecord, UsageStatus
from alize.gateway.output_filter import filter_output
from alize.gateway.safety import ContentSafety
from alize.gateway.tenancy import Tenancy
from alize.safety.moderator import create_moderator
from alize.safety.policy import FilterReport, SafetyPolicy
from alize.streams import aclose

log = logging.getLogger(__name__)
_S = TypeVar("_S")


@dataclass(frozen=True, slots=True)
class Prices:
    """Micro-units of the project's currency per million tokens."""

    input_per_million: int = 0
    output_per_million: int = 0


def _price(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def deployment_prices(spec: DeploymentSpec) -> Prices:
    """Prices from the deployment's catalog card (``price_input_per_million`` /
    ``price_output_per_million``); anything missing or malformed counts as free."""
    card: Any = spec.card
    if not isinstance(card, dict):
        return Prices()
    return Prices(_price(card.get("price_input_per_million")), _price(card.get("price_output_per_million")))


@dataclass
class _Ticket:
    """What one request holds between the gate and settling."""

    project_id: str
    key_id: str | None
    model: str
    started: float
    planned: Planned | None = None
    prices: Prices = Prices()
    lease: Lease | None = None
    reservation: Reservation | None = None
    settled: bool = False


class PolicyPipeline:
    """Routers call ``chat`` / ``complete`` instead of the generation service directly."""

    def __init__(
        self,
        generation: GenerationService,
        deployments: DeploymentManager,
        tenancy: Tenancy,
        embeddings: EmbeddingsService | None = None,
        *,
        safety: ContentSafety | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._generation = generation
        # the classifier loads on first use, so a pipeline with no filtering deployment never pays
        self._safety = safety or ContentSafety(create_moderator())
        self._embeddings = embeddings or EmbeddingsService(deployments)
        self._deployments = deployments
        self._tenancy = tenancy
        self._clock = clock
        self._settling: set[asyncio.Task[None]] = set()

    async def chat(
        self, call: ChatCall, caller: str, principal: Principal | None, *, project_id: str | None = None
    ) -> Generation:
        """``project_id`` bills a caller authenticated another way (a chat-page session)."""
        ticket = await self._ticket(call.model, principal, project_id)
        policy = self._policy(call.model)
        report: FilterReport | None = None
        if policy is not None and policy.input is not None:
            screened = await self._screened(ticket, self._safety.screen_chat(policy.input, call.messages))
            call, report = replace(call, messages=screened.messages), screened.report
        start = self._generation.chat
        return await self._run(
            ticket, principal, lambda gate: start(call, caller, gate=gate), policy, call.n, report
        )

    async def complete(self, call: TextCall, caller: str, principal: Principal | None) -> Generation:
        ticket = await self._ticket(call.model, principal)
        policy = self._policy(call.model)
        report: FilterReport | None = None
        if policy is not None and policy.input is not None:
            screened = await self._screened(
                ticket, self._safety.screen_text(policy.input, call.prompt, call.fim)
            )
            call = replace(call, prompt=screened.prompt, fim=screened.fim)
            report = screened.report
        start = self._generation.complete
        return await self._run(
            ticket, principal, lambda gate: start(call, caller, gate=gate), policy, call.n, report
        )

    async def embed(
        self,
        model: str,
        inputs: Sequence[str],
        caller: str,
        principal: Principal | None,
        *,
        dimensions: int | None = None,
    ) -> EmbeddingResult:
        """Embeddings under the same limits, budget and ledger as generation."""
        ticket = await self._ticket(model, principal)

        async def gate(planned: Planned) -> None:
            await self._admit(ticket, principal, planned)

        try:
            result = await self._embeddings.embed(model, inputs, caller, dimensions=dimensions, gate=gate)
        except BaseException as exc:
            await self._settle_failure(ticket, exc)
            raise
        await self._settle(
            ticket, None, UsageStatus.SUCCESS, None, usage=Usage(prompt_tokens=result.prompt_tokens)
        )
        return result

    async def drain(self) -> None:
        """Wait for settlements still running (at shutdown)."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)

    def _policy(self, deployment: str) -> SafetyPolicy | None:
        found = self._deployments.find(deployment)
        return found.spec.safety if found is not None else None

    async def _screened(self, ticket: _Ticket, screening: Awaitable[_S]) -> _S:
        """Await an input screening; a refused prompt leaves a ledger row (no tokens, no cost)
        so operators see what their filters stop, then the error goes to the client."""
        try:
            return await screening
        except (ContentFilterError, ContentFilterUnavailableError) as exc:
            filtered = isinstance(exc, ContentFilterError)
            deployment = self._deployments.find(ticket.model)
            request_id = "req_" + uuid.uuid4().hex
            exc.headers["x-request-id"] = request_id  # the client can look its row up
            await self._tenancy.metering.record(
                _usage_record(
                    ticket,
                    request_id=request_id,
                    deployment=ticket.model,
                    model=deployment.spec.model_id if deployment is not None else ticket.model,
                    status=UsageStatus.CONTENT_FILTERED if filtered else UsageStatus.ERROR,
                    code=exc.code,
                    usage=Usage(),
                    cost=0,
                    ended=self._clock(),
                    first=None,
                )
            )
            raise

    async def _run(
        self,
        ticket: _Ticket,
        principal: Principal | None,
        start: Callable[[Gate], Awaitable[Generation]],
        policy: SafetyPolicy | None,
        n: int,
        prompt_filter: FilterReport | None = None,
    ) -> Generation:
        async def gate(planned: Planned) -> None:
            await self._admit(ticket, principal, planned)

        try:
            generation = await start(gate)
        except BaseException as exc:
            await self._settle_failure(ticket, exc)
            raise
        if ticket.lease is not None:
            generation.headers.update(ticket.lease.headers)
        generation.prompt_filter = prompt_filter
        events = generation.events
        if policy is not None and policy.output is not None:
            events = filter_output(
                generation, events, self._safety, policy.output, window_tokens=policy.window_tokens, n=n
            )
        generation.events = self._observe(ticket, generation, events)
        generation.on_close.append(
            lambda: self._settle(ticket, generation, UsageStatus.CLIENT_DISCONNECTED, None)
        )
        return generation

    async def _ticket(
        self, model: str, principal: Principal | None, project_id: str | None = None
    ) -> _Ticket:
        started = self._clock()
        if principal is not None:
            authorize_deployment(principal, model)
            return _Ticket(principal.project_id, principal.key_id, model, started)
        if project_id is not None:
            return _Ticket(project_id, None, model, started)
        return _Ticket(await self._tenancy.default_project_id(), None, model, started)

    async def _settle_failure(self, ticket: _Ticket, exc: BaseException) -> None:
        """Admitted, then failed before any output (e.g. queue full, engine down, client gone)."""
        if ticket.planned is None:
            return
        if isinstance(exc, asyncio.CancelledError):
            await self._settle(ticket, None, UsageStatus.CLIENT_DISCONNECTED, None)
        else:
            code = exc.code if isinstance(exc, AlizeError) else "internal_error"
            await self._settle(ticket, None, UsageStatus.ERROR, code)

    async def _admit(self, ticket: _Ticket, principal: Principal | None, planned: Planned) -> None:
        """Rate limits, then the budget hold; either refusal leaves nothing held."""
        deployment = self._deployments.get(planned.deployment)
        ticket.prices = deployment_prices(deployment.spec)
        ticket.model = deployment.spec.model_id
        worst_completion = planned.max_tokens * planned.n
        if principal is not None:
            ticket.lease = await self._tenancy.limiter.acquire(
                principal.rate_limit_subjects(), tokens=planned.prompt_tokens + worst_completion
            )
        try:
            hold = cost_micros(
                planned.prompt_tokens,
                worst_completion,
                ticket.prices.input_per_million,
                ticket.prices.output_per_million,
            )
            ticket.reservation = await self._tenancy.budget.reserve(ticket.project_id, hold)
        except BaseException:
            if ticket.lease is not None:
                await ticket.lease.release(0)
                ticket.lease = None
            raise
        ticket.planned = planned

    async def _observe(
        self, ticket: _Ticket, generation: Generation, events: AsyncIterator[ChoiceEvent]
    ) -> AsyncIterator[ChoiceEvent]:
        """Pass events through, and settle with the outcome once the stream ends or is closed."""
        status, code = UsageStatus.CLIENT_DISCONNECTED, None
        filtered = False
        try:
            async for event in events:
                if event.delta.finish_reason == FinishReason.CONTENT_FILTER:
                    filtered = True
                yield event
            status = UsageStatus.CONTENT_FILTERED if filtered else UsageStatus.SUCCESS
        except AlizeError as exc:
            status, code = (
                (UsageStatus.CONTENT_FILTERED, exc.code)
                if exc.code == "content_filter"
                else (UsageStatus.ERROR, exc.code)
            )
            raise
        except Exception:
            status, code = UsageStatus.ERROR, "internal_error"
            raise
        finally:
            # close the engine stream first, so usage counts everything it produced
            with contextlib.suppress(Exception):
                await aclose(events)
            await self._settle(ticket, generation, status, code)

    async def _settle(
        self,
        ticket: _Ticket,
        generation: Generation | None,
        status: UsageStatus,
        code: str | None,
        *,
        usage: Usage | None = None,
    ) -> None:
        """Release, settle and meter once; shielded so a cancelled request still gets its row."""
        if ticket.settled or ticket.planned is None:
            return
        ticket.settled = True
        task = asyncio.ensure_future(self._settle_now(ticket, generation, status, code, usage))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        await asyncio.shield(task)

    async def _settle_now(
        self,
        ticket: _Ticket,
        generation: Generation | None,
        status: UsageStatus,
        code: str | None,
        usage: Usage | None,
    ) -> None:
        assert ticket.planned is not None
        if usage is None:
            usage = generation.usage if generation is not None else Usage()
        cost = cost_micros(
            usage.prompt_tokens,
            usage.completion_tokens,
            ticket.prices.input_per_million,
            ticket.prices.output_per_million,
        )
        now = self._clock()
        first = generation.first_token_at if generation is not None else None
        try:
            if ticket.lease is not None:
                await ticket.lease.release(usage.prompt_tokens + usage.completion_tokens)
            if ticket.reservation is not None:
                await self._tenancy.budget.settle(ticket.reservation, cost)
        finally:
            await self._tenancy.metering.record(
                _usage_record(
                    ticket,
                    request_id=ticket.planned.request_id,
                    deployment=ticket.planned.deployment,
                    model=ticket.model,
                    status=status,
                    code=code,
                    usage=usage,
                    cost=cost,
                    ended=now,
                    first=first,
                )
            )


def _usage_record(
    ticket: _Ticket,
    *,
    request_id: str,
    deployment: str,
    model: str,
    status: UsageStatus,
    code: str | None,
    usage: Usage,
    cost: int,
    ended: float,
    first: float | None,
) -> UsageRecord:
    """The ledger row of a request, with latency and time to first token from its ticket."""
    return UsageRecord(
        request_id=request_id,
        project_id=ticket.project_id,
        key_id=ticket.key_id,
        deployment=deployment,
        model=model,
        status=status,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cost_micros=cost,
        error_code=code,
        latency_ms=max(0, int((ended - ticket.started) * 1000)),
        ttft_ms=max(0, int((first - ticket.started) * 1000)) if first is not None else None,
    )
