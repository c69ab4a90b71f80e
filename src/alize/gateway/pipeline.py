"""The policy pipeline: who may run what, at what cost, and the one ledger row every admitted
request leaves behind. Routers and the chat assistant call ``chat`` / ``complete`` / ``embed``.

Every request goes down the same straight path, each step failing with a typed error:

1. **ticket**: authorise the deployment for the key (403), resolve it (404, the one lookup of
   the request) and note who pays (the key's project, the chat user's, or ``default``);
2. **screen input**: the deployment's input filter, if it has one (400 ``content_filter``, or
   503 ``content_filter_error`` when the filter fails closed; PII redacted when the policy says);
3. **prepare**: the generation (or embeddings) service loads the model, plans tools, counts the
   prompt and settles ``max_tokens`` (:mod:`alize.gateway.generation`);
4. **admit**: rate limits on the key and its project (429 with ``Retry-After``), then the budget
   holds the worst case, ``prompt + n * max_tokens`` at the deployment's prices (429
   ``insufficient_quota``);
5. **start**: wait for a slot (503 ``queue_full``) and generate; the hold's database write runs
   while the request waits for its slot and the engine starts on the prompt, and no event is
   read before it is confirmed (:mod:`alize.gateway.admitting`);
6. **filter and observe**: the output filter, if the deployment has one
   (:mod:`alize.gateway.output_filter`), inside the observer that settles when the stream ends.

Metrics, traces and logs watch through a :class:`~alize.gateway.observer.RequestObserver`, told
of refusals, starts, token gaps and settled rows; it never changes what happens.

A prompt the input filter refuses is cheap to refuse: it is judged before any model is loaded or
any limit is consumed, and leaves a row with no tokens and no cost (status ``content_filtered``,
or ``error`` with code ``content_filter_error``).

Settling happens exactly once per admitted request, whichever way it ends (finished, engine
error, content filter, client gone, never iterated): the rate-limit lease is released with the
actual tokens, the budget hold is replaced by the actual cost, and ``MeteringService.record``
writes the row keyed by the request id (an idempotent insert, so even a second path could not
add a second row) in the transaction that charges the budget. Settling is shielded from
cancellation, so a disconnect cannot lose it, and done before the stream's final chunk.
Requests refused before admission (401/403/404/400/429) leave no row. The budget is charged
only when the row is new: a request id seen twice (a batch line run again after its worker
died) is never billed twice.
A batch line (``line=``, :class:`~alize.gateway.tickets.BatchLine`) goes down the same path.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from alize.deployments.admission import Lane
from alize.deployments.manager import DeploymentManager
from alize.deployments.specs import Prices
from alize.domain import FinishReason, Usage
from alize.errors import AlizeError, ContentFilterError, ContentFilterUnavailableError
from alize.gateway.admitting import Admission
from alize.gateway.auth import Principal, authorize_deployment
from alize.gateway.calls import ChatCall, TextCall
from alize.gateway.choices import ChoiceEvent
from alize.gateway.embeddings import EmbeddingResult, EmbeddingsService
from alize.gateway.generation import Generation, GenerationService, Prepared
from alize.gateway.metering import UsageStatus
from alize.gateway.observer import Guarded, NullObserver, RequestObserver, Settled
from alize.gateway.output_filter import filter_output
from alize.gateway.safety import ContentSafety
from alize.gateway.settling import Settler
from alize.gateway.tenancy import Tenancy
from alize.gateway.tickets import (
    BatchLine,
    Moderated,
    Ticket,
    label,
    lane_of,
    line_request_id,
    served,
    usage_record,
)
from alize.safety.moderator import create_moderator
from alize.safety.policy import FilterReport
from alize.streams import aclose

log = logging.getLogger(__name__)
_S = TypeVar("_S")


class PolicyPipeline:
    def __init__(
        self,
        generation: GenerationService,
        deployments: DeploymentManager,
        tenancy: Tenancy,
        embeddings: EmbeddingsService | None = None,
        *,
        safety: ContentSafety | None = None,
        observer: RequestObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._generation = generation
        # the classifier loads on first use, so a pipeline with no filtering deployment never pays
        self._safety = safety or ContentSafety(create_moderator())
        self._embeddings = embeddings or EmbeddingsService()
        self._deployments = deployments
        self._tenancy = tenancy
        self._clock = clock
        self._observer = Guarded(observer or NullObserver())
        self._settler = Settler(tenancy, self._observer, clock)
        self._admission = Admission(generation, tenancy, self._observer, clock)

    async def chat(
        self,
        call: ChatCall,
        caller: str,
        principal: Principal | None,
        *,
        project_id: str | None = None,
        user_id: str | None = None,
        line: BatchLine | None = None,
    ) -> Generation:
        """Ticket → screen input → prepare → admit → start → filter and observe.

        ``project_id`` bills a caller authenticated another way (a chat-page session), and
        ``user_id`` names its chat user on the ledger row."""
        ticket = await self._ticket(call.model, principal, project_id, line)
        ticket.user_id = user_id
        report: FilterReport | None = None
        policy = served(ticket).spec.safety
        if policy is not None and policy.input is not None:
            screened = await self._screened(ticket, self._safety.screen_chat(policy.input, call.messages))
            call, report = replace(call, messages=screened.messages), screened.report
        prepared = await self._generation.prepare(served(ticket), call, request_id=line_request_id(line))
        return await self._start(ticket, principal, prepared, caller, report, lane_of(line))

    async def complete(
        self,
        call: TextCall,
        caller: str,
        principal: Principal | None,
        *,
        project_id: str | None = None,
        line: BatchLine | None = None,
    ) -> Generation:
        """The same path as :meth:`chat`, for a text or fill-in-the-middle prompt."""
        ticket = await self._ticket(call.model, principal, project_id, line)
        report: FilterReport | None = None
        policy = served(ticket).spec.safety
        if policy is not None and policy.input is not None:
            screened = await self._screened(
                ticket, self._safety.screen_text(policy.input, call.prompt, call.fim)
            )
            call = replace(call, prompt=screened.prompt, fim=screened.fim)
            report = screened.report
        prepared = await self._generation.prepare(served(ticket), call, request_id=line_request_id(line))
        return await self._start(ticket, principal, prepared, caller, report, lane_of(line))

    async def embed(
        self,
        model: str,
        inputs: Sequence[str],
        caller: str,
        principal: Principal | None,
        *,
        dimensions: int | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
        line: BatchLine | None = None,
    ) -> EmbeddingResult:
        """Ticket → prepare → admit → embed → settle: the limits, budget and ledger of generation.
        ``project_id`` and ``user_id`` as for :meth:`chat` (the chat page's documents)."""
        ticket = await self._ticket(model, principal, project_id, line)
        ticket.user_id = user_id
        prepared = await self._embeddings.prepare(
            served(ticket), inputs, dimensions=dimensions, request_id=line_request_id(line)
        )
        ticket.route = prepared.route  # the row names a fallback that served, as for generation
        try:
            await self._admission.admit(ticket, principal, prepared.request_id, prepared.prompt_tokens, 0)
            result = await self._embeddings.embed(prepared, caller, lane_of(line))
        except BaseException as exc:
            prepared.close()
            await self._settler.failure(ticket, exc)
            raise
        usage = Usage(prompt_tokens=result.prompt_tokens)
        await self._settler.settle(ticket, None, UsageStatus.SUCCESS, None, usage=usage)
        return result

    async def moderate(
        self,
        model: str,
        chars: int,
        principal: Principal | None,
        classify: Callable[[], Awaitable[_S]],
        prices: Prices,
        *,
        project_id: str | None = None,
        line: BatchLine | None = None,
    ) -> Moderated[_S]:
        """Ticket → admit → classify → settle: a moderation call under the key's and project's
        rate limits and the project's budget, metered like any other request. ``model`` is the
        moderation model named; ``prompt_tokens`` are estimated as ``ceil(chars / 4)`` (the
        classifier has no tokenizer of its own)."""
        payer, key_id = await self._payer(principal, project_id)
        if line is not None:
            prices = prices.for_batch()
        ticket = Ticket(payer, key_id, None, None, self._clock(), model, model, prices)
        tokens = -(-chars // 4)
        request_id = line.request_id if line is not None else "modr-" + uuid.uuid4().hex
        try:
            await self._admission.admit(ticket, principal, request_id, tokens, 0)
            result = await classify()
        except BaseException as exc:
            await self._settler.failure(ticket, exc)
            raise
        await self._settler.settle(ticket, None, UsageStatus.SUCCESS, None, usage=Usage(prompt_tokens=tokens))
        headers = {"x-request-id": request_id, **(ticket.lease.headers if ticket.lease else {})}
        return Moderated(result, request_id, headers)

    async def drain(self) -> None:
        """Wait for settlements still running (at shutdown)."""
        await self._settler.drain()

    # ------------------------------------------------------------------ the steps

    async def _ticket(
        self,
        model: str,
        principal: Principal | None,
        project_id: str | None = None,
        line: BatchLine | None = None,
    ) -> Ticket:
        started = self._clock()
        if principal is not None:
            authorize_deployment(principal, model)
        deployment = self._deployments.get(model)
        payer, key_id = await self._payer(principal, project_id)
        spec = deployment.spec
        prices = spec.prices.for_batch() if line is not None else spec.prices
        return Ticket(payer, key_id, deployment, spec, started, spec.name, spec.model_id, prices)

    async def _payer(self, principal: Principal | None, project_id: str | None) -> tuple[str, str | None]:
        """Who pays: the key's project, the project a session caller belongs to, else the
        operator's ``default`` project (open mode)."""
        if principal is not None:
            return principal.project_id, principal.key_id
        if project_id is not None:
            return project_id, None
        return await self._tenancy.default_project_id(), None

    async def _screened(self, ticket: Ticket, screening: Awaitable[_S]) -> _S:
        """Await an input screening; a refused prompt leaves a ledger row (no tokens, no cost)
        so operators see what their filters stop, then the error goes to the client."""
        try:
            return await screening
        except (ContentFilterError, ContentFilterUnavailableError) as exc:
            filtered = isinstance(exc, ContentFilterError)
            request_id = "req_" + uuid.uuid4().hex
            exc.headers["x-request-id"] = request_id  # the client can look its row up
            status = UsageStatus.CONTENT_FILTERED if filtered else UsageStatus.ERROR
            now = self._clock()
            record = usage_record(ticket, request_id, status, exc.code, Usage(), 0, now, None)
            await self._tenancy.metering.record(record)
            self._observer.settled(Settled(record, label(ticket), now - ticket.started, filtered_at="input"))
            raise

    async def _start(
        self,
        ticket: Ticket,
        principal: Principal | None,
        prepared: Prepared,
        caller: str,
        prompt_filter: FilterReport | None,
        lane: Lane = "interactive",
    ) -> Generation:
        """Admit and start, then wrap the events in the output filter and the settling observer."""
        ticket.route = prepared.route
        try:
            generation = await self._admission.admit_and_start(ticket, principal, prepared, caller, lane)
        except BaseException as exc:
            prepared.close()
            await self._settler.failure(ticket, exc)
            raise
        if ticket.lease is not None:
            generation.headers.update(ticket.lease.headers)
        generation.prompt_filter = prompt_filter
        events = generation.events
        policy = served(ticket).spec.safety
        if policy is not None and policy.output is not None:
            events = filter_output(
                generation,
                events,
                self._safety,
                policy.output,
                window_tokens=policy.window_tokens,
                n=prepared.n,
            )
        generation.events = self._observe(ticket, generation, events)
        generation.on_close.append(
            lambda: self._settler.settle(ticket, generation, UsageStatus.CLIENT_DISCONNECTED, None)
        )
        return generation

    async def _observe(
        self, ticket: Ticket, generation: Generation, events: AsyncIterator[ChoiceEvent]
    ) -> AsyncIterator[ChoiceEvent]:
        """Pass events through, and settle with the outcome once the stream ends or is closed."""
        status, code = UsageStatus.CLIENT_DISCONNECTED, None
        filtered = False
        last: dict[int, float] = {}  # when each choice last streamed tokens (inter-token latency)
        try:
            async for event in events:
                if event.delta.finish_reason == FinishReason.CONTENT_FILTER:
                    filtered = True
                if event.delta.tokens:
                    now = self._clock()
                    if event.index in last:
                        self._observer.token_gap(ticket.name, now - last[event.index])
                    last[event.index] = now
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
            await self._settler.settle(ticket, generation, status, code)
