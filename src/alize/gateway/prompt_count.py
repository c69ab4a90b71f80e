"""A prompt's size as admission sees it: the exact count, or an upper bound until one is needed.

Why: counting a prompt exactly is a call to the engine's worker before the request can start
(one round trip, and a wait behind the worker's decode under load). An engine that can bound
the prompt in this process (:meth:`alize.engines.base.Engine.prompt_token_bound`) lets the
gateway take that call off the path to the first token wherever the bound decides as the count
would:

* the reply's length: the bound is used only when it leaves the length :func:`settle_max_tokens`
  would give with any smaller count (:func:`bound_settles_length`), so ``max_tokens`` and the
  context check are the ones the exact count gives;
* the limits are checked before the request starts on the completion alone (the prompt's
  lowest bound, none of its tokens: what cannot fit then cannot fit with the prompt either);
* the count then runs beside the engine's start, in the branch that takes the budget hold
  (:meth:`alize.gateway.admitting.Admission.admit_and_start`; no event reaches the client before
  it ends): the token windows grow by the count, atomically, or refuse the request as they would
  have at admission (:meth:`alize.gateway.limits.Lease.grow`), and the budget holds the count.
  The worker's round trip is off the path to the first token, and every limit and hold decides
  on the count, as before. One difference: a request refused there was counted in its
  requests-per-minute window, as one refused by its budget is;
* the bill: the engine reports the prompt's real size at the end of each stream, and that is
  what the ledger row carries; a stream that ends without it is billed on the count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class PromptCount:
    """``tokens`` is exact when ``exact``; otherwise an upper bound, and :meth:`exactly`
    replaces it by the engine's count (once, however many ask)."""

    tokens: int
    exact: bool = True
    count: Callable[[], Awaitable[int]] | None = None
    _counting: asyncio.Future[int] | None = field(default=None, repr=False)

    @classmethod
    def bounded(cls, bound: int, count: Callable[[], Awaitable[int]]) -> PromptCount:
        return cls(bound, exact=False, count=count)

    async def exactly(self) -> int:
        """The exact count, asking the engine the first time it is needed."""
        if self.exact:
            return self.tokens
        assert self.count is not None
        if self._counting is None:
            self._counting = asyncio.ensure_future(self.count())
        tokens = await asyncio.shield(self._counting)
        self.tokens, self.exact = tokens, True
        return tokens


def bound_settles_length(
    bound: int, asked: int | None, *, ceiling: int | None, cap: int, context_length: int
) -> bool:
    """Whether ``bound`` gives the reply the length any count up to it would give.

    Asked for a length: it fits beside the bound, so it fits beside the count. Not asked for:
    the context left beside the bound is at least the ceiling, so it is beside the count too and
    the ceiling decides (:func:`alize.gateway.calls.settle_max_tokens`)."""
    needed = asked if asked is not None else (min(ceiling, cap) if ceiling is not None else cap)
    return context_length - bound >= max(needed, 1)
