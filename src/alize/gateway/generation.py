"""The generation service: chat, text and fill-in-the-middle requests, in two steps below HTTP.

:meth:`GenerationService.prepare` takes a resolved deployment and a call and does everything that
can refuse the request before it costs anything: check the caps → hold the deployment → load it
if needed (cold start) → check it can serve the call (chat template, FIM tokens) → plan tools →
count prompt tokens → settle ``max_tokens`` against the context. The result, :class:`Prepared`,
says what admission (limits, budget) decides on: the prompt size and the worst-case completion.

:meth:`GenerationService.start` then takes ``n`` slots in the deployment's fair queue (503 when
full) and returns a :class:`Generation` whose events stream from the engine; the ``n`` choices
run as parallel sequences (:mod:`alize.gateway.choices`). Usage is summed as events arrive, so a
cancelled request still knows what it cost. Every step before the first event fails with a
typed error, and a prepared request that is never started is closed, releasing its hold.

Fallbacks (:mod:`alize.deployments.fallbacks`): when the deployment cannot load, its context
is too short, its queue is full or its first event is an engine failure, the request is
prepared again on the next deployment of its ``fallbacks`` (same request id, the same
``max_tokens`` once admitted, so the budget's hold still covers it); ``Prepared.route`` and
``Generation.route`` record who served, who was left and why, and the upstream retries.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

from alize.config import LimitSettings
from alize.deployments.admission import Lane, SlotLease
from alize.deployments.fallbacks import Route, first_ready, leave_or_raise
from alize.deployments.manager import Deployment, DeploymentHold
from alize.domain import EngineInfo, GenerationRequest, Message, Usage
from alize.errors import UnsupportedFeatureError
from alize.gateway.calls import ChatCall, TextCall, check_call, settle_max_tokens
from alize.gateway.choices import ChoiceEvent, choice_stream, merge, nth_request
from alize.gateway.tools import ToolPlan, plan_tools
from alize.safety.policy import FilterReport
from alize.streams import Prefetched, aclose


@dataclass(slots=True)
class Prepared:
    """A request ready for admission: its deployment loaded and held (no idle unload, no
    eviction) until :meth:`GenerationService.start` takes its slots or :meth:`close` is called."""

    deployment: Deployment
    #: what the engine will be asked, ``max_tokens`` settled
    request: GenerationRequest
    n: int
    prompt_tokens: int
    #: the settled length of each choice
    max_tokens: int
    cold_start_s: float | None
    plan: ToolPlan | None
    hold: DeploymentHold
    #: what was asked (to prepare it again on a fallback) and the deployment it named
    call: ChatCall | TextCall | None = None
    requested: str = ""
    route: Route = field(default_factory=Route)
    #: the fallbacks not tried yet, in order
    remaining: list[Deployment] = field(default_factory=list)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def worst_case_completion_tokens(self) -> int:
        """What the budget and the token limits hold until the real count is known."""
        return self.n * self.max_tokens

    def close(self) -> None:
        """Let the deployment go (idempotent); a started request has already done so."""
        self.hold.release()


@dataclass(slots=True)
class Generation:
    """A started request: headers can be sent from these fields, then ``events`` streamed."""

    request_id: str
    deployment: str
    created: int
    prompt_tokens: int
    cold_start_s: float | None
    events: AsyncIterator[ChoiceEvent]
    #: the catalog model whose weights answer (AI Act transparency: named on every response)
    model: str = ""
    first_token_at: float | None = None
    started_at: float = field(default_factory=time.perf_counter)
    #: completion tokens the engine reported for each finished choice
    finished: dict[int, int] = field(default_factory=dict)
    #: tokens streamed so far for each choice (what a cancelled choice cost)
    streamed: dict[int, int] = field(default_factory=dict)
    engine_prompt_tokens: int | None = None
    cached_tokens: int = 0
    #: extra response headers added by the policy pipeline (e.g. ``x-ratelimit-*``)
    headers: dict[str, str] = field(default_factory=dict)
    #: run by ``aclose`` after the events are closed (metering must happen even if never iterated)
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: choices the consumer stopped early (the output filter cut them); their engines stop
    stopped: set[int] = field(default_factory=set)
    #: the input filter's report, when the deployment filters its input
    prompt_filter: FilterReport | None = None
    #: who served, the deployments left on the way and the upstream retries (fallbacks)
    route: Route = field(default_factory=Route)

    @property
    def usage(self) -> Usage:
        """Exact for finished choices; for cancelled ones, the tokens generated until then."""
        indices = set(self.finished) | set(self.streamed)
        completion = sum(self.finished.get(i, self.streamed.get(i, 0)) for i in indices)
        prompt = self.engine_prompt_tokens if self.engine_prompt_tokens is not None else self.prompt_tokens
        return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=self.cached_tokens)

    def account(self, event: ChoiceEvent) -> None:
        """Per-choice token counts; a choice the engine finished reports its own exact usage."""
        delta = event.delta
        self.route.retries += delta.retries
        if delta.usage is None:
            self.streamed[event.index] = self.streamed.get(event.index, 0) + delta.tokens
            return
        self.finished[event.index] = delta.usage.completion_tokens
        if event.index == 0 or self.engine_prompt_tokens is None:
            self.engine_prompt_tokens = delta.usage.prompt_tokens
            self.cached_tokens = delta.usage.cached_tokens

    async def aclose(self) -> None:
        try:
            await aclose(self.events)
        finally:
            hooks, self.on_close = self.on_close, []
            for hook in hooks:
                await hook()


class GenerationService:
    def __init__(self, limits: LimitSettings, safe_prompt: str) -> None:
        self._limits = limits
        self._safe_prompt = safe_prompt

    async def prepare(
        self, deployment: Deployment, call: ChatCall | TextCall, *, request_id: str | None = None
    ) -> Prepared:
        """Load, plan, count and settle (see the module docstring); every refusal is typed.
        ``request_id``: the caller's own (a batch line's, stable across retries), else a new one.
        A refusal that allows it moves on to the deployment's fallbacks."""
        check_call(call, self._limits)
        candidates = [deployment, *deployment.fallbacks()]
        prepared = await self._first_ready(candidates, call, Route(), request_id)
        prepared.requested = deployment.name
        return prepared

    async def _first_ready(
        self,
        candidates: list[Deployment],
        call: ChatCall | TextCall,
        route: Route,
        request_id: str | None,
    ) -> Prepared:
        prepared, remaining = await first_ready(
            candidates, lambda candidate: self._prepare_on(candidate, call, request_id), route
        )
        prepared.call, prepared.route, prepared.remaining = call, route, remaining
        return prepared

    async def _prepare_on(
        self, deployment: Deployment, call: ChatCall | TextCall, request_id: str | None
    ) -> Prepared:
        hold = deployment.hold()
        try:
            info, cold = await deployment.ensure_loaded()
            if isinstance(call, ChatCall):
                request, plan = self._chat_request(call, info)
                ceiling = call.max_tokens_ceiling
            else:
                request, plan, ceiling = _text_request(call, info), None, None
            prompt_tokens = await deployment.engine.count_prompt_tokens(request)
            max_tokens = settle_max_tokens(
                request.params.max_tokens,
                ceiling=ceiling,
                cap=self._limits.max_tokens,
                prompt_tokens=prompt_tokens,
                context_length=info.context_length,
            )
        except BaseException:
            hold.release()
            raise
        request = replace(request, params=replace(request.params, max_tokens=max_tokens))
        if request_id is not None:
            request = replace(request, request_id=request_id)
        return Prepared(deployment, request, call.n, prompt_tokens, max_tokens, cold, plan, hold)

    async def _fall_back(self, prepared: Prepared, exc: Exception) -> Prepared:
        """Prepare the request on its next fallback after ``exc``, or raise ``exc``. Admission
        has been done: the length is pinned to what was admitted, the request id kept."""
        remaining = len(prepared.remaining) if prepared.call is not None else 0
        leave_or_raise(prepared.route, prepared.deployment.name, exc, remaining=remaining)
        call = prepared.call
        assert call is not None
        call = replace(call, params=replace(call.params, max_tokens=prepared.max_tokens))
        again = await self._first_ready(prepared.remaining, call, prepared.route, prepared.request_id)
        again.requested = prepared.requested
        return again

    def _chat_request(self, call: ChatCall, info: EngineInfo) -> tuple[GenerationRequest, ToolPlan]:
        if not info.supports_chat:
            raise UnsupportedFeatureError(
                f"'{call.model}' has no chat template; use /v1/completions", param="model"
            )
        messages = call.messages
        if call.safe_prompt:
            messages = (Message(role="system", content=self._safe_prompt), *messages)
        plan = plan_tools(messages, call.tools, call.tool_choice, native=info.supports_tools)
        params = call.params
        if plan.json_schema is not None:
            params = replace(params, json_schema=plan.json_schema)
        native = plan.mode == "native"
        request = GenerationRequest(
            request_id=_request_id(),
            params=params,
            messages=plan.messages,
            tools=plan.tools if native else (),
            tool_choice=call.tool_choice if native else None,
        )
        return request, plan

    async def start(self, prepared: Prepared, caller: str, lane: Lane = "interactive") -> Generation:
        """Take a slot per choice in the fair queue (503 when full, or the next fallback), then
        stream. The hold on the deployment ends here whatever happens: once the slots are held,
        they keep it loaded."""
        prepared, leases = await self._slots(prepared, caller, lane)
        generation = Generation(
            request_id=prepared.request_id,
            deployment=prepared.requested or prepared.deployment.name,
            created=int(time.time()),
            prompt_tokens=prepared.prompt_tokens,
            cold_start_s=prepared.cold_start_s,
            events=_empty(),
            model=prepared.deployment.spec.model_id,
            route=prepared.route,
        )
        current = [_Streams(prepared, leases, generation)]

        async def close_current() -> None:
            await current[0].aclose()

        # closing the generation frees the slots and the engine streams even if never iterated
        generation.on_close.append(close_current)
        generation.events = self._events(prepared, current, generation, caller, lane)
        return generation

    async def _slots(self, prepared: Prepared, caller: str, lane: Lane) -> tuple[Prepared, list[SlotLease]]:
        while True:
            deployment = prepared.deployment
            leases: list[SlotLease] = []
            try:
                for _ in range(prepared.n):
                    leases.append(await deployment.admit(caller, lane))
            except BaseException as exc:
                for lease in leases:
                    lease.release()
                prepared.close()
                if not isinstance(exc, Exception):
                    raise
                prepared = await self._fall_back(prepared, exc)
                continue
            prepared.close()
            return prepared, leases

    async def _events(
        self,
        prepared: Prepared,
        current: list[_Streams],
        generation: Generation,
        caller: str,
        lane: Lane,
    ) -> AsyncIterator[ChoiceEvent]:
        """The events of the deployment that serves (``current[0]``, already fetching its first
        event); one whose first event is a failure that allows it gives way to the next fallback
        (nothing has reached the client yet)."""
        while True:
            generation.route.served_by = prepared.deployment.name
            generation.model = prepared.deployment.spec.model_id
            stream = current[0].events()
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                return
            except Exception as exc:
                await stream.aclose()
                prepared = await self._fall_back(prepared, exc)
                prepared, leases = await self._slots(prepared, caller, lane)
                generation.prompt_tokens = prepared.prompt_tokens
                current[0] = _Streams(prepared, leases, generation)
                continue
            try:
                yield first
                async for event in stream:
                    yield event
            finally:
                await stream.aclose()
            return


class _Streams:
    """The ``n`` engine sequences of a started generation, their first event already being
    fetched (:class:`~alize.streams.Prefetched`: the engine starts on the prompt now, while the
    caller finishes admission), and everything they hold, released exactly once."""

    def __init__(self, prepared: Prepared, leases: list[SlotLease], generation: Generation) -> None:
        deployment, request, n = prepared.deployment, prepared.request, prepared.n
        self._deployment = deployment
        self._leases = leases
        self._generation = generation
        self._sources: list[AsyncGenerator[ChoiceEvent, None]] = [
            choice_stream(
                deployment.engine, nth_request(request, i, n), i, prepared.plan, leases[i], generation.stopped
            )
            for i in range(n)
        ]
        self._merged = Prefetched(self._sources[0] if n == 1 else merge(self._sources))
        self._closed = False

    async def events(self) -> AsyncGenerator[ChoiceEvent, None]:
        generation = self._generation
        try:
            async for event in self._merged:
                if generation.first_token_at is None and (event.delta.text or event.delta.tool_calls):
                    generation.first_token_at = time.perf_counter()
                generation.account(event)
                yield event
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._merged.aclose()  # stops the pumps of a merge before their sources close
            for source in self._sources:
                await source.aclose()
        finally:
            for lease in self._leases:
                lease.release()
            self._deployment.last_used = time.monotonic()


def _text_request(call: TextCall, info: EngineInfo) -> GenerationRequest:
    if call.fim is not None and not info.supports_fim:
        raise UnsupportedFeatureError(
            f"'{call.model}' has no fill-in-the-middle tokens; FIM needs a code model that has them",
            param="model",
        )
    return GenerationRequest(request_id=_request_id(), params=call.params, prompt=call.prompt, fim=call.fim)


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex


async def _empty() -> AsyncIterator[ChoiceEvent]:
    return
    yield  # pragma: no cover
