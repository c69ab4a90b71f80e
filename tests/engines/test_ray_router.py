"""Prefix affinity on Ray Serve without a cluster: Alizé's Serve request router, as Serve's
handle drives it (choose, routed, completed, a replica died), sends a conversation's next turn
to the replica that took the previous one unless that replica is much busier, and everything
else to the least busy replica. On a real cluster: tests/e2e/test_ray.py."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from tests.support.installed import import_or_missing

from alize.domain import GenerationRequest, Message, SamplingParams

import_or_missing("ray.serve")

from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID, RequestMetadata  # noqa: E402
from ray.serve.request_router import PendingRequest  # noqa: E402

from alize.engines.ray_router import AffinityRouter  # noqa: E402

DEPLOYMENT = DeploymentID(name="llamacpp", app_name="alize.chat")
_ids = itertools.count()


@dataclass
class Replica:  # what the router reads of Serve's RunningReplica
    replica_id: ReplicaID


def _router(slack: int = 1, slots: int = 2) -> tuple[AffinityRouter, list[Replica]]:
    router = AffinityRouter(DEPLOYMENT, DeploymentHandleSource.UNKNOWN)
    router.initialize_state(slack=slack, slots=slots)
    return router, [Replica(ReplicaID(name, DEPLOYMENT)) for name in ("a", "b")]


def _turn(*texts: str, method: str = "generate") -> PendingRequest:
    roles = itertools.cycle(("user", "assistant"))
    messages = tuple(Message(role=next(roles), content=text) for text in texts)  # type: ignore[arg-type]
    request = GenerationRequest("r", SamplingParams(max_tokens=8), messages=messages)
    n = str(next(_ids))
    return PendingRequest(args=[request], kwargs={}, metadata=RequestMetadata(n, n, call_method=method))


async def _route(router: AffinityRouter, replicas: list[Replica], pending: PendingRequest) -> str:
    """What Serve does with the first rank: send there, and report it accepted."""
    ranks = await router.choose_replicas(replicas, pending)  # type: ignore[arg-type]
    assert all(len(rank) == 1 for rank in ranks) and len(ranks) == len(replicas)
    chosen = ranks[0][0].replica_id
    router.on_request_routed(pending, chosen, None)
    return chosen.unique_id


def _done(router: AffinityRouter, pending: PendingRequest, replica: str) -> None:
    router.on_request_completed(ReplicaID(replica, DEPLOYMENT), pending.metadata.internal_request_id)


async def test_the_next_turn_goes_to_the_replica_that_took_the_previous_one() -> None:
    router, replicas = _router()
    first, second = _turn("about cats"), _turn("about ships")
    # two conversations at once: the least busy replica takes each
    assert await _route(router, replicas, first) == "a"
    assert await _route(router, replicas, second) == "b"
    _done(router, first, "a")
    _done(router, second, "b")
    # idle replicas: without affinity both next turns would go to "a" (ties: Serve's order)
    nxt = _turn("about ships", "ships float", "why?")
    assert await _route(router, replicas, nxt) == "b"
    _done(router, nxt, "b")
    assert await _route(router, replicas, _turn("about cats", "cats purr", "why?")) == "a"
    assert router.affinity_hits == 2


async def test_a_much_busier_holder_loses_the_turn_to_the_least_busy_replica() -> None:
    router, replicas = _router(slack=1, slots=4)
    assert await _route(router, replicas, _turn("about cats")) == "a"  # still streaming
    for i in range(2):  # two more on "a" (their own conversations, sent there as if by affinity)
        router.on_request_routed(_turn(f"other {i}"), ReplicaID("a", DEPLOYMENT), None)
    # "a" has 3 in flight, "b" none: more than the slack of 1 over the least busy
    assert await _route(router, replicas, _turn("about cats", "cats purr", "why?")) == "b"
    assert router.affinity_hits == 0


async def test_a_full_holder_loses_the_turn_when_another_replica_has_a_free_slot() -> None:
    router, replicas = _router(slack=8, slots=1)
    first = _turn("about cats")
    assert await _route(router, replicas, first) == "a"
    assert await _route(router, replicas, _turn("about cats", "cats purr", "why?")) == "b"


async def test_a_dead_replica_is_forgotten_and_other_calls_go_to_the_least_busy() -> None:
    router, replicas = _router()
    first = _turn("about cats")
    assert await _route(router, replicas, first) == "a"
    # token counts and embeddings: least busy, and not counted as sequences
    count = _turn("about cats", method="count_prompt_tokens")
    assert await _route(router, replicas, count) == "b"
    _done(router, first, "a")
    router.on_replica_actor_died(ReplicaID("a", DEPLOYMENT))
    survivors = [r for r in replicas if r.replica_id.unique_id != "a"]
    assert await _route(router, survivors, _turn("about cats", "cats purr", "why?")) == "b"
    # "a" is back (a new replica under the same id would not hold the prompt either)
    assert await _route(router, replicas, _turn("about dogs")) == "a"
    assert router.affinity_hits == 0


async def test_a_choice_serve_never_sent_stops_counting() -> None:
    router, replicas = _router()
    ranks = await router.choose_replicas(replicas, _turn("about cats"))  # type: ignore[arg-type]
    assert ranks[0][0].replica_id.unique_id == "a"  # chosen, then cancelled before it was sent
    assert router._load(replicas)[ReplicaID("a", DEPLOYMENT)] == 1  # type: ignore[arg-type]
    router._sequences = {k: (rid, t - 10, ok) for k, (rid, t, ok) in router._sequences.items()}
    assert router._load(replicas)[ReplicaID("a", DEPLOYMENT)] == 0  # type: ignore[arg-type]
    assert not router._sequences
