"""The routing rule, pure: prefix keys of a conversation's turns, affinity to the replica holding
the longest known prefix unless it is much busier, least outstanding otherwise, and replicas
marked down skipped (all of them down: all are candidates again)."""

from __future__ import annotations

from alize.deployments.routing import Router
from alize.domain import GenerationRequest, Message, SamplingParams
from alize.engines.affinity import PROMPT_BLOCK_CHARS, prefix_keys, reply_key


def _chat(*turns: tuple[str, str], adapter: str | None = None) -> GenerationRequest:
    messages = tuple(Message(role=role, content=content) for role, content in turns)  # type: ignore[arg-type]
    return GenerationRequest("r", SamplingParams(max_tokens=8), messages=messages, adapter=adapter)


def test_the_next_turn_starts_with_the_prefix_the_previous_turn_left() -> None:
    first = _chat(("system", "be brief"), ("user", "hello"))
    second = _chat(("system", "be brief"), ("user", "hello"), ("assistant", "hi there"), ("user", "more"))
    keys = prefix_keys(second)
    assert len(keys) == 4  # one per message, longest first
    assert reply_key(first, "hi there") == keys[1]  # the history plus the reply as sent back
    assert prefix_keys(first) == keys[2:]
    assert reply_key(first, "something else") not in keys
    # the adapter changes the KV: the same text under another adapter shares no prefix
    assert not set(prefix_keys(_chat(("system", "be brief"), adapter="ft"))) & set(keys)


def test_raw_prompts_are_keyed_by_blocks_and_short_ones_not_at_all() -> None:
    long = "x" * (PROMPT_BLOCK_CHARS * 2 + 10)
    request = GenerationRequest("r", SamplingParams(max_tokens=8), prompt=long)
    shorter = GenerationRequest("r", SamplingParams(max_tokens=8), prompt=long[: PROMPT_BLOCK_CHARS + 3])
    assert len(prefix_keys(request)) == 2 and prefix_keys(shorter) == prefix_keys(request)[1:]
    assert prefix_keys(GenerationRequest("r", SamplingParams(max_tokens=8), prompt="hi")) == []
    assert reply_key(request, "more") is None


def test_least_outstanding_with_ties_to_the_lowest_index() -> None:
    router = Router(3)
    assert router.pick() == 0
    router.started(0)
    assert router.pick() == 1
    router.started(1)
    router.started(2)
    router.started(1)
    assert router.pick() == 0  # 1, 2, 1 in flight
    router.finished(1)
    router.finished(1)
    assert router.pick() == 1
    assert [r.served for r in router.replicas] == [1, 2, 1]


def test_affinity_wins_unless_the_holder_is_much_busier() -> None:
    router = Router(2, affinity_slack=1)
    keys = [b"long", b"short"]
    router.remember(1, [b"short"])
    assert router.pick(keys) == 1 and router.affinity_hits == 1  # the longest *known* prefix
    router.remember(0, [b"long"])
    assert router.pick(keys) == 0
    router.started(0)
    assert router.pick(keys) == 0  # one more in flight than replica 1: within the slack
    router.started(0)
    assert router.pick(keys) == 1  # two more: the least busy replica takes it
    # the longest prefix held by a busy replica does not send it to a shorter prefix's holder
    router.remember(1, [b"other"])
    assert router.pick([b"long", b"other"]) == 1
    router.finished(0)
    router.affinity = False  # least outstanding only
    assert router.pick([b"long"]) == 1


def test_a_full_holder_yields_to_a_replica_with_a_free_slot() -> None:
    router = Router(2, affinity_slack=4, slots=2)
    router.remember(0, [b"k"])
    router.started(0)
    router.started(1)
    assert router.pick([b"k"]) == 0  # a free slot on the holder
    router.started(0)
    assert router.pick([b"k"]) == 1  # holder full, replica 1 has a slot free: no waiting
    router.started(1)
    assert router.pick([b"k"]) == 0  # every replica full: the cache decides


def test_a_replica_marked_down_gets_nothing_and_forgets_its_prefixes() -> None:
    router = Router(2)
    router.remember(1, [b"k"])
    router.mark_down(1, "worker died")
    router.started(0)
    assert router.pick([b"k"]) == 0 and router.least_busy() == 0  # busier, but the only one up
    router.finished(0)
    assert router.replicas[1].last_error == "worker died"
    router.mark_up(1)
    assert router.pick([b"k"]) == 0  # its cache died with it: no affinity left
    router.mark_down(0, "x")
    router.mark_down(1, "y")
    assert router.pick() == 0  # all down: all are candidates, the engine's own error speaks
    assert router.pick(exclude=frozenset({0})) == 1


def test_prefixes_are_forgotten_oldest_first() -> None:
    router = Router(2, prefix_capacity=2)
    router.remember(1, [b"a", b"b"])
    router.pick([b"a"])  # used: now the most recent
    router.remember(1, [b"c"])
    assert router.pick([b"b"]) == 0 and router.pick([b"a"]) == 1 and router.pick([b"c"]) == 1
