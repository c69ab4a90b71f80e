"""How long a deployment's loads took: what ``GET /v1/models`` and the catalog show as its
measured cold start.

A load is timed from the request that found the deployment unloaded to the engine being ready
(:meth:`alize.deployments.manager.Deployment.ensure_loaded`, which also returns it to that
request as ``x-alize-cold-start-ms``). The figures are this server's own, kept in memory for
the last :data:`KEPT` loads: they describe this machine now, not a number typed into a card.
"""

from __future__ import annotations

import statistics
from collections import deque
from typing import Any

#: loads remembered per deployment (the p50 and max are over these)
KEPT = 20


class ColdStarts:
    """The durations of a deployment's last :data:`KEPT` loads."""

    __slots__ = ("_seconds", "count")

    def __init__(self) -> None:
        self._seconds: deque[float] = deque(maxlen=KEPT)
        self.count = 0

    def record(self, seconds: float) -> None:
        self._seconds.append(seconds)
        self.count += 1

    def summary(self) -> dict[str, Any] | None:
        """``{"last_s", "p50_s", "max_s", "loads"}``; None before the first load."""
        if not self._seconds:
            return None
        return {
            "last_s": round(self._seconds[-1], 3),
            "p50_s": round(statistics.median(self._seconds), 3),
            "max_s": round(max(self._seconds), 3),
            "loads": self.count,
        }
