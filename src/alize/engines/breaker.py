"""A circuit breaker for one replica: stop sending to an upstream that keeps failing, try it
again after a cool-down.

::

    closed ──(failures consecutive failed attempts)──▶ open ──(cooldown_s)──▶ half-open
      ▲                                                  ▲                       │
      └──────────────(the trial succeeds)────────────────┼───────────────────────┤
                                                         └──(the trial fails)────┘

While open, :meth:`CircuitBreaker.check` refuses at once with 503 ``circuit_open`` and the
seconds left in ``Retry-After`` (no connection is tried, no retry waits), so a request fails
fast, or falls back to another deployment, instead of spending its retries on a dead host.
Half-open lets exactly one trial through; the calls that arrive meanwhile are refused as if
open. A failure is an attempt that could not reach the upstream, timed out, or got a 5xx; a
429 or a 4xx is the upstream answering, and resets the count like a success.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from alize.errors import EngineUnavailableError

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int = 5,
        cooldown_s: float = 30.0,
        name: str = "upstream",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError("a breaker opens after at least one failure")
        self.failures = failures
        self.cooldown_s = max(0.0, cooldown_s)
        self.name = name
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        #: when the half-open trial was let through (a trial abandoned by its caller is
        #: replaced by another one after a further cool-down)
        self._trial_at: float | None = None
        #: times the breaker opened since it was made (for operators and tests)
        self.opened = 0

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._trial_at is not None or self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def check(self) -> None:
        """Let an attempt through, or refuse it (503 ``circuit_open``) while the circuit is open
        or its one half-open trial is under way."""
        if self._opened_at is None:
            return
        now = self._clock()
        left = self.cooldown_s - (now - self._opened_at)
        stale = self._trial_at is not None and now - self._trial_at >= self.cooldown_s
        if left <= 0 and (self._trial_at is None or stale):
            self._trial_at = now  # this caller is the trial; the others wait for its outcome
            return
        raise EngineUnavailableError(
            f"the {self.name} failed {self.failures} times in a row; calls to it are paused "
            f"(circuit open, next trial in {max(0.0, left):.1f} s)",
            retry_after=max(1.0, left),
            code="circuit_open",
        )

    def success(self) -> None:
        """The upstream answered (any status below 500, 429 included): close the circuit."""
        self._consecutive = 0
        self._opened_at = None
        self._trial_at = None

    def failure(self) -> None:
        """An attempt failed (unreachable, timed out, 5xx): count it; open at the threshold, or
        at once when it was the half-open trial."""
        self._consecutive += 1
        if self._trial_at is not None or (self._opened_at is None and self._consecutive >= self.failures):
            self._opened_at = self._clock()
            self._trial_at = None
            self.opened += 1
