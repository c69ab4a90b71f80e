"""Login throttling: failed passwords counted per account and per client address.

Before it, 50 wrong passwords went through in 9 s with no 429. Now each account and each client
address may fail ``max_failures`` (resp. ``max_failures_per_address``) times within
``window_s``; the failure that reaches the limit locks that account or address for
``lockout_s``, during which
logins are refused with 429 ``login_locked`` and a ``Retry-After``, *without* checking the
password (a locked attacker costs no argon2 work). Unknown emails are counted exactly like
known ones, so the throttle tells nothing about which accounts exist. A success clears the
account's failures but not the address's, so one valid account cannot be used to reset the
counter while guessing others.

The counters live in this process (bounded: the oldest entries are dropped past
``max_tracked``); several gateway processes each count on their own, which multiplies the
allowance by the process count but never lifts it.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from alize.errors import RateLimitError


@dataclass(slots=True)
class _Counter:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Lockout:
    """A lock that a failure just started: ``scope`` is ``account`` or ``address``."""

    scope: str
    key: str
    failures: int
    seconds: float


class LoginThrottle:
    def __init__(
        self,
        *,
        max_failures: int,
        max_failures_per_address: int,
        window_s: float,
        lockout_s: float,
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"account": max_failures, "address": max_failures_per_address}
        self._window = window_s
        self._lockout = lockout_s
        self._max_tracked = max_tracked
        self._clock = clock
        self._counters: OrderedDict[tuple[str, str], _Counter] = OrderedDict()

    def _counter(self, scope: str, key: str) -> _Counter:
        counter = self._counters.get((scope, key))
        if counter is None:
            counter = self._counters[(scope, key)] = _Counter()
            while len(self._counters) > self._max_tracked:
                self._counters.popitem(last=False)
        self._counters.move_to_end((scope, key))
        return counter

    def check(self, account: str, address: str) -> None:
        """429 ``login_locked`` while the account or the address is locked."""
        now = self._clock()
        waits = [
            c.locked_until - now
            for c in (self._counters.get(("account", account)), self._counters.get(("address", address)))
            if c is not None and c.locked_until > now
        ]
        if waits:
            raise RateLimitError(
                "Too many failed logins; try again later.", retry_after=max(waits), code="login_locked"
            )

    def failed(self, account: str, address: str) -> list[Lockout]:
        """Count a failure; the lockouts it started (for the audit log)."""
        now = self._clock()
        started: list[Lockout] = []
        for scope, key in (("account", account), ("address", address)):
            counter = self._counter(scope, key)
            counter.failures.append(now)
            while counter.failures and counter.failures[0] <= now - self._window:
                counter.failures.popleft()
            if len(counter.failures) >= self._limits[scope] and counter.locked_until <= now:
                counter.locked_until = now + self._lockout
                started.append(Lockout(scope, key, len(counter.failures), self._lockout))
                counter.failures.clear()
        return started

    def succeeded(self, account: str) -> None:
        self._counters.pop(("account", account), None)
