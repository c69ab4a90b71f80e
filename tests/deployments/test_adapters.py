"""Fine-tuned models as adapters on one loaded base: each answers as itself, and publishing a new
adapter swaps the base's workers without cutting off a request in flight."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.fixtures.tiny_lora import N_KV, random_adapter

from alize.deployments.manager import Deployment, DeploymentManager, DeploymentSpec, QueueLimits
from alize.domain import FinishReason, GenerationRequest, Message, SamplingParams
from alize.engines.base import EngineConfig, LoraAdapter
from alize.engines.registry import EngineRegistry
from alize.errors import ConflictError

pytestmark = pytest.mark.e2e


def _request(adapter: str | None = None, max_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(
        request_id="t",
        params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
        messages=(Message(role="user", content="route this request"),),
        adapter=adapter,
    )


async def _answer(
    deployment: Deployment, max_tokens: int = 8, hold: asyncio.Event | None = None
) -> tuple[str, int, FinishReason | None]:
    """Generate to the end; with `hold`, stop reading after the first delta until it is set, so the
    stream is in flight for as long as the test needs, whatever the machine's speed."""
    await deployment.ensure_loaded()
    lease = await deployment.admit("t")
    text, tokens, finish = "", 0, None
    try:
        async for delta in deployment.engine.generate(_request(max_tokens=max_tokens)):
            if hold is not None:
                await hold.wait()
            text, finish = text + delta.text, delta.finish_reason or finish
            tokens = delta.usage.completion_tokens if delta.usage else tokens
    finally:
        lease.release()
    return text, tokens, finish


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _ft(name: str, host: str, config: EngineConfig) -> DeploymentSpec:
    return DeploymentSpec(name=name, model_id=name, engine=config, adapter_host=host)


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[tuple[DeploymentManager, EngineConfig, dict[str, Path]]]:
    base = write_tiny_llama_gguf(tmp_path / "base.gguf", n_head_kv=N_KV, scale=0.2, n_ctx=512)
    paths = {name: random_adapter(base, tmp_path / f"{name}.gguf", seed) for seed, name in enumerate("ab")}
    config = EngineConfig(
        kind="llamacpp",
        model_path=base,
        parallel=2,
        ctx_per_slot=256,
        threads=2,
        batch_size=64,
        adapters=(LoraAdapter("ft:tiny:a:1", paths["a"]),),
    )
    mgr = DeploymentManager(EngineRegistry(), QueueLimits(max_waiting=8, timeout_s=30))
    yield mgr, config, paths
    await mgr.close()


async def test_each_model_answers_as_itself_and_a_publish_cuts_nothing_off(
    manager: tuple[DeploymentManager, EngineConfig, dict[str, Path]],
) -> None:
    mgr, config, paths = manager
    host = mgr.add(DeploymentSpec(name="tiny", model_id="tiny", engine=config))
    ft_a = mgr.add(_ft("ft:tiny:a:1", "tiny", config))
    assert ft_a.queue is host.queue  # one base, one set of slots
    base_answer, a_answer = (await _answer(host))[0], (await _answer(ft_a))[0]
    assert base_answer != a_answer
    old_pids = host.engine.worker_pids()

    # a long request on adapter a is streaming when adapter b is published; its reader holds the
    # stream open until the publish returns (a timing race on a fast machine otherwise: CI saw the
    # 120 tokens end before the new workers were up)
    hold = asyncio.Event()
    long = asyncio.create_task(_answer(ft_a, max_tokens=120, hold=hold))
    while not host.engine.active:  # noqa: ASYNC110 (the engine has no event for this)
        await asyncio.sleep(0.01)
    both = (config.adapters[0], LoraAdapter("ft:tiny:b:2", paths["b"]))
    await mgr.publish_adapters("tiny", both)
    ft_b = mgr.add(_ft("ft:tiny:b:2", "tiny", config))
    assert not long.done(), "the publish waited for, or cut off, the request in flight"
    hold.set()
    _, tokens, finish = await long
    assert tokens == 120 and finish is FinishReason.LENGTH  # served to the end by the old worker

    new_pids = host.engine.worker_pids()
    assert new_pids and set(new_pids).isdisjoint(old_pids)
    answers = [(await _answer(d))[0] for d in (host, ft_a, ft_b)]
    assert answers[:2] == [base_answer, a_answer]  # unchanged by the publish
    assert len(set(answers)) == 3
    await asyncio.gather(*mgr._retiring)
    assert all(_gone(pid) for pid in old_pids)  # the old worker was stopped and reaped
    assert [d.name for d in mgr.hosted_by("tiny")] == ["ft:tiny:a:1", "ft:tiny:b:2"]


async def test_an_adapter_its_host_does_not_load_is_refused(
    manager: tuple[DeploymentManager, EngineConfig, dict[str, Path]],
) -> None:
    mgr, config, _ = manager
    mgr.add(DeploymentSpec(name="tiny", model_id="tiny", engine=config))
    with pytest.raises(ConflictError, match="does not load the adapter"):
        mgr.add(_ft("ft:tiny:zzz:9", "tiny", config))
