"""Which replica takes a sequence: least outstanding requests, health, prefix affinity.

* :meth:`Router.pick` sends the request to the replica holding its longest known prefix (the
  rule and the prefix keys are :mod:`alize.engines.affinity`'s, shared with the Ray Serve
  router), unless that replica is much busier (more than ``affinity_slack`` sequences over the
  least busy one, or all its ``slots`` taken while another replica has one free), else to the
  replica with the fewest sequences in flight (ties: the lowest index, so a lightly loaded
  deployment keeps one replica warm rather than spreading requests thin);
* a replica marked down (its engine reported itself unavailable, or a health check failed) gets
  no traffic until a health check passes again; with every replica down, all are candidates,
  so the engines' own errors (and restarts) reach the client rather than a made-up one.

The router holds no engine and does no I/O: :class:`~alize.deployments.replicas.ReplicaSet`
calls it and runs the health checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alize.engines.affinity import DEFAULT_PREFIX_CAPACITY, PrefixOwners


@dataclass(slots=True)
class ReplicaState:
    in_flight: int = 0
    #: sequences this replica has started since the deployment was created
    served: int = 0
    healthy: bool = True
    #: why it was last taken out of routing (for operators)
    last_error: str | None = None


class Router:
    """Routing state of one replica set; see the module docstring for the rule."""

    def __init__(
        self,
        replicas: int,
        *,
        affinity: bool = True,
        affinity_slack: int = 2,
        slots: int | None = None,
        prefix_capacity: int = DEFAULT_PREFIX_CAPACITY,
    ) -> None:
        if replicas < 1:
            raise ValueError("a router needs at least one replica")
        self.replicas = [ReplicaState() for _ in range(replicas)]
        #: off: least outstanding only (bench/routing.py compares the two)
        self.affinity = affinity
        self.affinity_slack = affinity_slack
        #: sequences one replica decodes at once: a full holder loses its affinity to a replica
        #: with a free slot (waiting for a slot costs more than reading the prompt again)
        self.slots = slots
        #: prefix key -> the replica that last computed it
        self._owners: PrefixOwners[int] = PrefixOwners(prefix_capacity)
        #: requests sent to the replica holding their prefix (for operators and the benchmark)
        self.affinity_hits = 0

    def _candidates(self, exclude: frozenset[int]) -> list[int]:
        indexes = [i for i in range(len(self.replicas)) if i not in exclude]
        healthy = [i for i in indexes if self.replicas[i].healthy]
        return healthy or indexes or list(range(len(self.replicas)))

    def least_busy(self, exclude: frozenset[int] = frozenset()) -> int:
        return min(self._candidates(exclude), key=lambda i: (self.replicas[i].in_flight, i))

    def pick(self, keys: Sequence[bytes] = (), exclude: frozenset[int] = frozenset()) -> int:
        """The replica for a request whose prompt has ``keys`` (longest prefix first), avoiding
        ``exclude`` (replicas that already failed this request) where another is left."""
        candidates = self._candidates(exclude)
        least = min(candidates, key=lambda i: (self.replicas[i].in_flight, i))
        if not self.affinity or not keys:
            return least
        load = {i: self.replicas[i].in_flight for i in candidates}
        owner = self._owners.prefer(keys, load, slack=self.affinity_slack, slots=self.slots)
        if owner is None:
            return least
        self.affinity_hits += 1
        return owner

    def remember(self, index: int, keys: Sequence[bytes]) -> None:
        """``index`` now holds these prefixes in its cache."""
        self._owners.remember(index, keys)

    def started(self, index: int) -> None:
        state = self.replicas[index]
        state.in_flight += 1
        state.served += 1

    def finished(self, index: int) -> None:
        self.replicas[index].in_flight -= 1

    def mark_down(self, index: int, reason: str) -> None:
        state = self.replicas[index]
        state.healthy, state.last_error = False, reason
        self._owners.forget(index)  # its cache is gone with its process (or unreachable)

    def mark_up(self, index: int) -> None:
        self.replicas[index].healthy = True
