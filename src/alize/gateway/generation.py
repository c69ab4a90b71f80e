"""The generation service: chat, text and fill-in-the-middle requests, end to end below HTTP.

Steps, in order, each failing with a typed error before any byte is streamed:
validate caps → resolve the deployment (404) → load it if needed (cold start) → plan tools →
count prompt tokens and check the context window → admit through the deployment's fair queue
(503 when full). Then the engine streams; ``n`` choices run as parallel sequences with seeds
``seed + i``. Usage is summed as it arrives, so a cancelled request still knows what it cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

from alize.config import LimitSettings
from alize.deployments.admission import SlotLease
from alize.deployments.manager import Deployment, DeploymentManager
from alize.domain import (
    Delta,
    EngineInfo,
    FimPrompt,
    FinishReason,
    GenerationRequest,
    Message,
    SamplingParams,
    ToolSpec,
    Usage,
)
from alize.errors import ContextLengthExceededError, InvalidRequestError, UnsupportedFeatureError
from alize.gateway.tools import ToolChoice, ToolPlan, may_become_call, parse_tool_call, plan_tools
from alize.safety.policy import FilterReport
from alize.streams import aclose


@dataclass(slots=True)
class ChatCall:
    model: str
    messages: tuple[Message, ...]
    params: SamplingParams
    max_tokens_given: bool = True
    n: int = 1
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = None
    safe_prompt: bool = False
    #: with ``max_tokens_given`` False: at most this many tokens, fewer if the context has less room
    max_tokens_ceiling: int | None = None


@dataclass(slots=True)
class TextCall:
    model: str
    params: SamplingParams
    prompt: str | None = None
    fim: FimPrompt | None = None
    max_tokens_given: bool = True
    n: int = 1


@dataclass(frozen=True, slots=True)
class ChoiceEvent:
    index: int
    delta: Delta
    #: the output filter's report, on the event that finishes a filtered choice
    filter: FilterReport | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    """A request about to be admitted: what the policy gate (limits, budget) decides on."""

    request_id: str
    deployment: str
    prompt_tokens: int
    max_tokens: int
    n: int


#: called once prompt tokens are counted and before the request waits for a slot; raising refuses it
Gate = Callable[[Planned], Awaitable[None]]


@dataclass(slots=True)
class Generation:
    """A started request: headers can be sent from these fields, then ``events`` streamed."""

    request_id: str
    deployment: str
    created: int
    prompt_tokens: int
    cold_start_s: float | None
    events: AsyncIterator[ChoiceEvent]
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

    @property
    def usage(self) -> Usage:
        """Exact for finished choices; for cancelled ones, the tokens generated until then."""
        indices = set(self.finished) | set(self.streamed)
        completion = sum(self.finished.get(i, self.streamed.get(i, 0)) for i in indices)
        prompt = self.engine_prompt_tokens if self.engine_prompt_tokens is not None else self.prompt_tokens
        return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=self.cached_tokens)

    async def aclose(self) -> None:
        try:
            await aclose(self.events)
        finally:
            hooks, self.on_close = self.on_close, []
            for hook in hooks:
                await hook()


def _check_caps(params: SamplingParams, n: int, limits: LimitSettings) -> None:
    if n > limits.max_n:
        raise InvalidRequestError(f"n must be at most {limits.max_n}", param="n")
    if params.max_tokens > limits.max_tokens:
        raise InvalidRequestError(f"max_tokens must be at most {limits.max_tokens}", param="max_tokens")
    if len(params.stop) > limits.max_stop:
        raise InvalidRequestError(f"at most {limits.max_stop} stop sequences are allowed", param="stop")
    if any(len(s) > limits.max_stop_length or not s for s in params.stop):
        raise InvalidRequestError(
            f"stop sequences must be 1 to {limits.max_stop_length} characters long", param="stop"
        )
    if params.top_logprobs > limits.max_top_logprobs:
        raise InvalidRequestError(
            f"top_logprobs must be at most {limits.max_top_logprobs}", param="top_logprobs"
        )


class GenerationService:
    def __init__(self, deployments: DeploymentManager, limits: LimitSettings, safe_prompt: str) -> None:
        self._deployments = deployments
        self._limits = limits
        self._safe_prompt = safe_prompt

    async def chat(self, call: ChatCall, caller: str, *, gate: Gate | None = None) -> Generation:
        if len(call.messages) > self._limits.max_messages:
            raise InvalidRequestError(
                f"at most {self._limits.max_messages} messages are allowed", param="messages"
            )
        if len(call.tools) > self._limits.max_tools:
            raise InvalidRequestError(f"at most {self._limits.max_tools} tools are allowed", param="tools")
        _check_caps(call.params, call.n, self._limits)
        deployment = self._deployments.get(call.model)
        async with deployment.using():
            info, cold = await deployment.ensure_loaded()
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
            request = GenerationRequest(
                request_id="",
                params=params,
                messages=plan.messages,
                tools=plan.tools if plan.mode == "native" else (),
                tool_choice=call.tool_choice if plan.mode == "native" else None,
            )
            return await self._start(
                deployment,
                info,
                cold,
                request,
                call.n,
                call.max_tokens_given,
                caller,
                plan,
                gate,
                ceiling=call.max_tokens_ceiling,
            )

    async def complete(self, call: TextCall, caller: str, *, gate: Gate | None = None) -> Generation:
        _check_caps(call.params, call.n, self._limits)
        deployment = self._deployments.get(call.model)
        async with deployment.using():
            info, cold = await deployment.ensure_loaded()
            if call.fim is not None and not info.supports_fim:
                raise UnsupportedFeatureError(
                    f"'{call.model}' has no fill-in-the-middle tokens; FIM needs a code model that has them",
                    param="model",
                )
            request = GenerationRequest(request_id="", params=call.params, prompt=call.prompt, fim=call.fim)
            return await self._start(
                deployment, info, cold, request, call.n, call.max_tokens_given, caller, None, gate
            )

    async def _start(
        self,
        deployment: Deployment,
        info: EngineInfo,
        cold: float | None,
        request: GenerationRequest,
        n: int,
        max_tokens_given: bool,
        caller: str,
        plan: ToolPlan | None,
        gate: Gate | None = None,
        *,
        ceiling: int | None = None,
    ) -> Generation:
        request.request_id = "req_" + uuid.uuid4().hex
        prompt_tokens = await deployment.engine.count_prompt_tokens(request)
        room = info.context_length - prompt_tokens
        if not max_tokens_given:
            limit = min(ceiling, self._limits.max_tokens) if ceiling else self._limits.max_tokens
            request.params.max_tokens = max(1, min(room, limit))
        if prompt_tokens + (request.params.max_tokens if max_tokens_given else 1) > info.context_length:
            raise ContextLengthExceededError(
                prompt_tokens=prompt_tokens,
                max_tokens=request.params.max_tokens if max_tokens_given else 0,
                context_length=info.context_length,
            )
        if gate is not None:
            max_tokens = request.params.max_tokens
            await gate(Planned(request.request_id, deployment.name, prompt_tokens, max_tokens, n))
        leases: list[SlotLease] = []
        try:
            for _ in range(n):
                leases.append(await deployment.admit(caller))
        except BaseException:
            for lease in leases:
                lease.release()
            raise
        generation = Generation(
            request_id=request.request_id,
            deployment=deployment.name,
            created=int(time.time()),
            prompt_tokens=prompt_tokens,
            cold_start_s=cold,
            events=_empty(),
        )
        generation.events = self._stream(deployment, request, n, leases, plan, generation)
        return generation

    async def _stream(
        self,
        deployment: Deployment,
        request: GenerationRequest,
        n: int,
        leases: list[SlotLease],
        plan: ToolPlan | None,
        generation: Generation,
    ) -> AsyncIterator[ChoiceEvent]:
        sources = [
            _choice_stream(deployment, _nth(request, i, n), i, plan, leases[i], generation.stopped)
            for i in range(n)
        ]
        merged = sources[0] if n == 1 else _merge(sources)
        try:
            async for event in merged:
                if generation.first_token_at is None and (event.delta.text or event.delta.tool_calls):
                    generation.first_token_at = time.perf_counter()
                _account(generation, event)
                yield event
        finally:
            await merged.aclose()  # stops the pumps of a merge before their sources close
            for source in sources:
                await source.aclose()
            for lease in leases:
                lease.release()
            deployment.last_used = time.monotonic()


async def _empty() -> AsyncIterator[ChoiceEvent]:
    return
    yield  # pragma: no cover


def _nth(request: GenerationRequest, i: int, n: int) -> GenerationRequest:
    if n == 1:
        return request
    seed = request.params.seed
    return replace(request, params=replace(request.params, seed=None if seed is None else seed + i))


def _account(generation: Generation, event: ChoiceEvent) -> None:
    """Per-choice token counts; a choice the engine finished reports its own exact usage."""
    delta = event.delta
    if delta.usage is None:
        generation.streamed[event.index] = generation.streamed.get(event.index, 0) + delta.tokens
        return
    generation.finished[event.index] = delta.usage.completion_tokens
    if event.index == 0 or generation.engine_prompt_tokens is None:
        generation.engine_prompt_tokens = delta.usage.prompt_tokens
        generation.cached_tokens = delta.usage.cached_tokens


async def _choice_stream(
    deployment: Deployment,
    request: GenerationRequest,
    index: int,
    plan: ToolPlan | None,
    lease: SlotLease,
    stopped: set[int],
) -> AsyncGenerator[ChoiceEvent, None]:
    """One sequence, with emulated tool calls assembled; releases its slot as soon as it ends
    (or as soon as the consumer puts ``index`` in ``stopped``)."""
    stream = deployment.engine.generate(request)
    held = ""  # text withheld while it may still be a JSON tool call
    try:
        async for delta in stream:
            if index in stopped:
                yield ChoiceEvent(index, Delta(tokens=delta.tokens))  # generated, so metered
                break
            if plan is None or not plan.emulated:
                yield ChoiceEvent(index, delta)
                continue
            if delta.finish_reason is None:
                if plan.mode == "constrained" or may_become_call(held + delta.text):
                    held += delta.text
                    yield ChoiceEvent(index, Delta(tokens=delta.tokens))
                else:
                    text, held = held + delta.text, ""
                    plan = replace(plan, mode="off")  # an ordinary answer: stream it
                    yield ChoiceEvent(index, replace(delta, text=text))
                continue
            full = held + delta.text
            call = parse_tool_call(full, plan.tools)
            if call is not None:
                yield ChoiceEvent(
                    index, replace(delta, text="", tool_calls=(call,), finish_reason=FinishReason.TOOL_CALLS)
                )
            else:
                yield ChoiceEvent(index, replace(delta, text=full))
    finally:
        await stream.aclose()
        lease.release()


async def _merge(sources: list[AsyncGenerator[ChoiceEvent, None]]) -> AsyncGenerator[ChoiceEvent, None]:
    # bounded: the choices run at most one event ahead of the consumer, so a consumer that stops a
    # choice (the output filter) stops it promptly instead of after it ran to the end
    queue: asyncio.Queue[ChoiceEvent | BaseException | None] = asyncio.Queue(maxsize=1)

    async def pump(source: AsyncGenerator[ChoiceEvent, None]) -> None:
        try:
            async for event in source:
                await queue.put(event)
            await queue.put(None)
        except asyncio.CancelledError:
            raise  # the consumer is gone: nobody would take an item from the (full) queue
        except BaseException as exc:  # re-raised in the consumer
            await queue.put(exc)

    tasks = [asyncio.create_task(pump(s)) for s in sources]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
