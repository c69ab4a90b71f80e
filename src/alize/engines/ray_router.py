"""Prefix affinity on Ray Serve: the request router of Alizé's Serve deployment.

Serve's default router picks the less busy of two random replicas, so a conversation's next
turn lands on a replica without its prompt cache as often as not. :class:`AffinityRouter`
applies the rule every Alizé router applies (:mod:`alize.engines.affinity`: the same prefix
keys, the same slack): a ``generate`` call goes to the replica that computed the longest known
prefix of its prompt unless that replica is much busier than the least busy one; otherwise,
and for every other call (token counts, embeddings, checks), to the least busy replica, ties to
Serve's order (one replica stays warm rather than requests spreading thin).

It runs inside the gateway's process, in the Serve handle that calls the replicas (Serve builds
it from the deployment's ``request_router_config``; :mod:`alize.engines.ray` sets it), so it sees
each :class:`~alize.domain.GenerationRequest` before Serve sends it. "Busy" is the sequences
this router has sent to the replica and not seen end, counted from the moment it chose the
replica (Serve's queue-length cache also counts token counts, whose end it learns late: with it,
the call that counted a prompt pushed the prompt's own sequence to the other replica, measured);
a replica whose queue is full still refuses, and Serve tries the next rank. A replica
learns a prompt's prefixes when Serve reports the call accepted; the reply is not seen here, so
the next turn matches on the previous turn's prompt (a prefix of its own), which is enough to
find the replica. A replica that dies or leaves the deployment is forgotten.

This module imports Ray: only :mod:`alize.engines.ray` imports it, when a deployment loads.
"""

from __future__ import annotations

import time
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from alize.domain import GenerationRequest
from alize.engines.affinity import DEFAULT_PREFIX_CAPACITY, PrefixOwners, prefix_keys

#: a choice not yet confirmed by Serve (the request was cancelled before it was sent) stops
#: counting as load after this long
UNCONFIRMED_TTL_S = 5.0


def _generation(pending: PendingRequest | None) -> GenerationRequest | None:
    if pending is None or pending.metadata.call_method != "generate" or not pending.args:
        return None
    request = pending.args[0]
    return request if isinstance(request, GenerationRequest) else None


class AffinityRouter(RequestRouter):
    """Serve's request router for Alizé's llama.cpp replicas; see the module docstring."""

    def initialize_state(
        self, slack: int = 1, slots: int | None = None, capacity: int = DEFAULT_PREFIX_CAPACITY, **_: Any
    ) -> None:
        self._slack, self._slots = slack, slots
        self._owners: PrefixOwners[ReplicaID] = PrefixOwners(capacity)
        #: generate calls in flight: internal request id -> (replica, when chosen, confirmed)
        self._sequences: dict[str, tuple[ReplicaID, float, bool]] = {}
        #: requests sent to the replica holding their prefix
        self.affinity_hits = 0

    def _load(self, candidates: list[RunningReplica]) -> dict[ReplicaID, int]:
        """Sequences in flight per candidate, as this router sent them."""
        now = time.monotonic()
        load = {replica.replica_id: 0 for replica in candidates}
        for internal, (replica_id, chosen_at, confirmed) in list(self._sequences.items()):
            if not confirmed and now - chosen_at >= UNCONFIRMED_TTL_S:
                del self._sequences[internal]  # never sent (cancelled while routed)
            elif replica_id in load:
                load[replica_id] += 1
        return load

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        """Ranks of one replica each, the preferred first: the holder of the prompt's longest
        known prefix when it is not much busier, then the rest from the least busy."""
        if not candidate_replicas:
            return []
        load = self._load(candidate_replicas)
        ranked = sorted(candidate_replicas, key=lambda r: load[r.replica_id])  # stable: Serve's order
        request = _generation(pending_request)
        if request is not None and pending_request is not None:
            keys = prefix_keys(request)
            owner = self._owners.prefer(keys, load, slack=self._slack, slots=self._slots) if keys else None
            if owner is not None:
                self.affinity_hits += 1
                ranked.sort(key=lambda r: r.replica_id != owner)
            internal = pending_request.metadata.internal_request_id
            self._sequences[internal] = (ranked[0].replica_id, time.monotonic(), False)
        return [[replica] for replica in ranked]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        request = _generation(pending_request)
        if request is None:
            return
        self._sequences[pending_request.metadata.internal_request_id] = (replica_id, time.monotonic(), True)
        self._owners.remember(replica_id, prefix_keys(request))

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self._sequences.pop(internal_request_id, None)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._owners.forget(replica_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        before = set(self.curr_replicas)
        super().update_replicas(replicas)
        for gone in before - set(self.curr_replicas):
            self._owners.forget(gone)
