"""A replica set over scripted engines: each sequence to the least busy replica, a conversation's
next turn to the replica that served the previous one (unless it is much busier), a replica
that reports itself unavailable taken out (before the first token: the request goes to
another; after: the stream fails and the next goes elsewhere) and brought back by a health
check, and engines that place their own replicas rescaled through the set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.scripted_engine import ScriptedEngine

from alize.deployments.replicas import ReplicaSet
from alize.domain import Delta, GenerationRequest, Message, SamplingParams
from alize.engines.base import EngineConfig, ReplicaScaling
from alize.errors import EngineError, EngineUnavailableError, UnsupportedFeatureError


class Replica(ScriptedEngine):
    """The echo scenario, counting what it serves; ``down`` makes it unavailable (its worker
    gone), ``die_after`` fails its streams after that many tokens, ``gate`` holds streams."""

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.prompts: list[str] = []
        self.down = False
        self.die_after: int | None = None
        self.gate: asyncio.Event | None = None
        self.rescaled: list[ReplicaScaling] = []

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        if self.down:
            raise EngineUnavailableError("the model worker stopped unexpectedly")
        self.prompts.append(request.messages[-1].content or "")
        n = 0
        async for delta in super().generate(request):
            if self.gate is not None:
                await self.gate.wait()
            if self.die_after is not None and n == self.die_after:
                raise EngineUnavailableError("the model worker stopped unexpectedly")
            n += 1
            yield delta

    async def check(self) -> None:
        if self.down:
            raise EngineUnavailableError("the model worker is not running")

    async def rescale(self, scaling: ReplicaScaling) -> None:
        self.rescaled.append(scaling)


def _replicas(n: int) -> list[Replica]:
    return [Replica(EngineConfig(kind="scripted", model_path=Path("echo"), parallel=2)) for _ in range(n)]


def _request(*contents: str) -> GenerationRequest:
    roles = ["user", "assistant"]
    messages = tuple(Message(role=roles[i % 2], content=c) for i, c in enumerate(contents))  # type: ignore[arg-type]
    return GenerationRequest("r", SamplingParams(max_tokens=16), messages=messages)


async def _run(engines: ReplicaSet, request: GenerationRequest) -> str:
    return "".join([d.text async for d in engines.generate(request)])


async def test_concurrent_sequences_spread_to_the_least_busy() -> None:
    replicas = _replicas(3)
    gate = asyncio.Event()
    for r in replicas:
        r.gate = gate
    engines = ReplicaSet(replicas)
    await engines.start()
    tasks = [asyncio.create_task(_run(engines, _request(f"chat {i}"))) for i in range(6)]
    await asyncio.sleep(0.05)
    assert engines.in_flight == [2, 2, 2]
    gate.set()
    await asyncio.gather(*tasks)
    assert engines.served == [2, 2, 2] and engines.in_flight == [0, 0, 0]
    await engines.stop()


async def test_the_next_turn_goes_to_the_replica_holding_the_conversation() -> None:
    replicas = _replicas(2)
    engines = ReplicaSet(replicas, affinity_slack=1)
    await engines.start()
    gate = asyncio.Event()
    replicas[0].gate = gate
    # conversation A on replica 0 (held open), so conversation B starts on replica 1
    a1 = asyncio.create_task(_run(engines, _request("alpha one")))
    await asyncio.sleep(0.02)
    b1 = await _run(engines, _request("beta one"))
    gate.set()
    a1_reply = await a1
    assert replicas[0].prompts == ["alpha one"] and replicas[1].prompts == ["beta one"]
    # each next turn, sent back with the reply as the assistant message, follows its history,
    # though least-outstanding alone would send both to replica 0
    await _run(engines, _request("beta one", b1, "beta two"))
    await _run(engines, _request("alpha one", a1_reply, "alpha two"))
    assert replicas[0].prompts == ["alpha one", "alpha two"]
    assert replicas[1].prompts == ["beta one", "beta two"]
    assert engines.router.affinity_hits == 2
    # a reply the client changed still matches the shared history before it
    await _run(engines, _request("beta one", "edited", "beta three"))
    assert replicas[1].prompts[-1] == "beta three"
    await engines.stop()


async def test_affinity_yields_when_the_holder_is_much_busier() -> None:
    replicas = _replicas(2)
    engines = ReplicaSet(replicas, affinity_slack=1)
    await engines.start()
    first = await _run(engines, _request("hello"))
    gate = asyncio.Event()
    replicas[0].gate = replicas[1].gate = gate
    held = [asyncio.create_task(_run(engines, _request(f"busy {i}"))) for i in range(3)]
    await asyncio.sleep(0.02)
    assert engines.in_flight == [2, 1]  # 3 fresh chats: least outstanding
    nxt = asyncio.create_task(_run(engines, _request("hello", first, "again")))
    await asyncio.sleep(0.02)
    assert engines.in_flight == [3, 1]  # within the slack: affinity wins
    more = asyncio.create_task(_run(engines, _request("hello", first, "again", "x", "y")))
    await asyncio.sleep(0.02)
    assert engines.in_flight == [3, 2]  # 2 more than the other replica: it goes there
    gate.set()
    await asyncio.gather(*held, nxt, more)
    await engines.stop()


async def test_a_dead_replica_is_skipped_and_a_health_check_brings_it_back() -> None:
    replicas = _replicas(2)
    engines = ReplicaSet(replicas, health_interval_s=3600)
    await engines.start()
    replicas[0].down = True
    # before the first token: the other replica serves it, the client sees nothing
    assert await _run(engines, _request("hello there")) == "hello there "
    assert engines.healthy == [False, True] and replicas[1].prompts == ["hello there"]
    await _run(engines, _request("next"))
    assert replicas[0].prompts == [] and engines.served == [1, 2]
    assert await engines.check_replicas() == [False, True]  # still down
    replicas[0].down = False
    assert await engines.check_replicas() == [True, True]
    await _run(engines, _request("back"))
    assert replicas[0].prompts == ["back"]
    await engines.stop()


async def test_a_replica_dying_mid_stream_fails_that_stream_and_the_next_goes_elsewhere() -> None:
    replicas = _replicas(2)
    engines = ReplicaSet(replicas, health_interval_s=3600)
    await engines.start()
    replicas[0].die_after = 1
    got: list[str] = []
    with pytest.raises(EngineUnavailableError):
        async for delta in engines.generate(_request("one two three")):
            got.append(delta.text)
    assert got == ["one "]  # sent once: never retried after the first token
    assert engines.healthy == [False, True] and engines.in_flight == [0, 0]
    assert await _run(engines, _request("and now")) == "and now "
    assert replicas[1].prompts == ["and now"]
    await engines.stop()


async def test_with_every_replica_down_the_engines_own_error_reaches_the_caller() -> None:
    replicas = _replicas(2)
    engines = ReplicaSet(replicas, health_interval_s=3600)
    await engines.start()
    for r in replicas:
        r.down = True
    with pytest.raises(EngineUnavailableError, match="stopped unexpectedly"):
        await _run(engines, _request("hi"))
    assert engines.healthy == [False, False]
    replicas[1].down = False
    assert await _run(engines, _request("hi")) == "hi "  # the least busy of all is tried again
    await engines.stop()


async def test_other_engine_errors_do_not_take_a_replica_out() -> None:
    replicas = _replicas(2)
    replicas[0].scenario = "error-first"
    engines = ReplicaSet(replicas, health_interval_s=3600)
    await engines.start()
    with pytest.raises(EngineError, match="scripted failure"):
        await _run(engines, _request("hi"))
    assert engines.healthy == [True, True]
    await engines.stop()


async def test_the_health_loop_runs_on_its_own_and_stops_with_the_set() -> None:
    replicas = _replicas(2)
    engines = ReplicaSet(replicas, health_interval_s=0.01)
    await engines.start()
    replicas[1].down = True
    for _ in range(100):
        if engines.healthy == [True, False]:
            break
        await asyncio.sleep(0.01)
    assert engines.healthy == [True, False]
    await engines.stop()
    assert engines._health is None


async def test_rescale_reaches_engines_that_place_their_replicas() -> None:
    replicas = _replicas(1)
    engines = ReplicaSet(replicas)
    scaling = ReplicaScaling(replicas=1, min_replicas=1, max_replicas=4)
    await engines.rescale(scaling)
    assert replicas[0].rescaled == [scaling]
    with pytest.raises(UnsupportedFeatureError):
        await ReplicaSet([ScriptedEngine(EngineConfig(kind="scripted"))]).rescale(scaling)


async def test_a_single_replica_hashes_no_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Affinity has nothing to choose between with one replica, so its per-request cost (a hash
    per message, the reply kept and hashed) is not paid; with two it is."""
    import alize.deployments.replicas as replicas_module

    calls: list[str] = []

    def counted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(replicas_module, "prefix_keys", counted("prefix", replicas_module.prefix_keys))
    monkeypatch.setattr(replicas_module, "reply_key", counted("reply", replicas_module.reply_key))
    single = ReplicaSet(_replicas(1))
    await single.start()
    assert await _run(single, _request("alpha one")) != ""
    assert calls == []
    await single.stop()
    pair = ReplicaSet(_replicas(2))
    await pair.start()
    await _run(pair, _request("alpha one"))
    assert calls == ["prefix", "reply"]
    await pair.stop()
