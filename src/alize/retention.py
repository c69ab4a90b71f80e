"""Retention: data older than the operator allows is deleted by a periodic sweep.

Each kind of stored data brings a :class:`RetentionRule`: its name, how long it may be kept
(``None``: forever), and how to delete what is older. The sweeper knows no table: the chat adds
rules for conversations, uploaded files and expired sessions, the metering ledger one for the
request log, and the batch system (when it exists) adds one for batch outputs in the same way,
with one more setting. A pass runs every rule, reports what each removed, and a failing rule
does not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from alize.periodic import Periodic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionRule:
    #: what it removes, as reported and audited: ``conversations``, ``uploaded_files``...
    name: str
    #: how long rows may be kept; ``None`` keeps them forever
    keep: timedelta | None
    #: delete what was last touched before the given moment; returns how many rows went
    purge: Callable[[datetime], Awaitable[int]]


def days(value: float) -> timedelta | None:
    """A ``*_days`` setting as a duration; 0 means keep forever."""
    return timedelta(days=value) if value > 0 else None


class RetentionSweeper:
    def __init__(
        self,
        rules: Sequence[RetentionRule],
        *,
        interval_s: float,
        clock: Callable[[], datetime],
        report: Callable[[dict[str, int]], Awaitable[None]] | None = None,
    ) -> None:
        self.rules = list(rules)
        self._clock = clock
        self._report = report
        self._loop = Periodic("retention", interval_s, self.sweep)

    async def sweep(self) -> dict[str, int]:
        """Run every rule once; ``{rule name: rows removed}`` for the rules that removed any."""
        now = self._clock()
        removed: dict[str, int] = {}
        failures: list[BaseException] = []
        for rule in self.rules:
            if rule.keep is None:
                continue
            try:
                count = await rule.purge(now - rule.keep)
            except Exception as exc:  # one broken rule must not keep the others from running
                failures.append(exc)
                continue
            if count:
                removed[rule.name] = count
        if removed and self._report is not None:
            await self._report(removed)
        if failures:
            raise failures[0]
        return removed

    async def start(self) -> None:
        """One pass now (what expired while the server was down), then one every interval; a
        failed first pass is logged and does not keep the server from starting."""
        try:
            await self.sweep()
        except Exception:
            log.exception("retention: the start-up pass failed (the next one runs as planned)")
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
