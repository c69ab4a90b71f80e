"""From engine deltas to the events of ``n`` choices: one engine sequence per choice, emulated
tool calls assembled, the choices merged into one stream.

Each choice runs as its own sequence with seed ``seed + i`` (so ``n`` seeded choices differ and
are each reproducible) and holds its own slot, released the moment that sequence ends, or the
moment the consumer marks the choice stopped (the output filter cut it): the engine stream is
closed at its next token. Merging runs the choices at most one event ahead of the consumer, so
such a stop takes effect promptly rather than after the choice ran to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

from alize.deployments.admission import SlotLease
from alize.domain import Delta, FinishReason, GenerationRequest
from alize.engines.base import Engine
from alize.gateway.tools import ToolPlan, may_become_call, parse_tool_call
from alize.safety.policy import FilterReport


@dataclass(frozen=True, slots=True)
class ChoiceEvent:
    index: int
    delta: Delta
    #: the output filter's report, on the event that finishes a filtered choice
    filter: FilterReport | None = None


def nth_request(request: GenerationRequest, i: int, n: int) -> GenerationRequest:
    """Choice ``i`` of ``n``: the same request, its seed moved by ``i``."""
    if n == 1:
        return request
    seed = request.params.seed
    return replace(request, params=replace(request.params, seed=None if seed is None else seed + i))


async def choice_stream(
    engine: Engine,
    request: GenerationRequest,
    index: int,
    plan: ToolPlan | None,
    lease: SlotLease,
    stopped: set[int],
) -> AsyncGenerator[ChoiceEvent, None]:
    """One sequence, with emulated tool calls assembled; releases its slot as soon as it ends
    (or as soon as the consumer puts ``index`` in ``stopped``)."""
    stream = engine.generate(request)
    held = ""  # text withheld while it may still be a JSON tool call
    try:
        async for delta in stream:
            lease.first_token()
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


async def merge(sources: list[AsyncGenerator[ChoiceEvent, None]]) -> AsyncGenerator[ChoiceEvent, None]:
    """The events of every source as they come; the first failure is raised to the consumer."""
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
