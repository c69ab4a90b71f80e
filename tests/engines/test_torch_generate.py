"""Text generation on the PyTorch engine with a tiny random Llama folder built by the test: exact
usage, max_tokens, seeded sampling, stop strings, logprobs, bounded concurrency and cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.fixtures.tiny_hf import write_tiny_causal_lm

from alize.domain import Delta, FinishReason, GenerationRequest, Message, SamplingParams
from alize.engines.base import EngineConfig
from alize.engines.torch import TorchEngine
from alize.errors import UnsupportedFeatureError

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_causal_lm(tmp_path_factory.mktemp("tiny-hf") / "tiny-llama")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(folder: Path) -> AsyncIterator[TorchEngine]:
    eng = TorchEngine(EngineConfig(kind="torch", model_path=folder, threads=1, parallel=2, ctx_per_slot=256))
    await eng.start()
    yield eng
    await eng.stop()


def chat(max_tokens: int = 24, **params: object) -> GenerationRequest:
    return GenerationRequest(
        request_id="r",
        params=SamplingParams(max_tokens=max_tokens, **params),  # type: ignore[arg-type]
        messages=(Message(role="system", content="Be brief."), Message(role="user", content="Count to ten.")),
    )


async def run(engine: TorchEngine, request: GenerationRequest) -> list[Delta]:
    return [d async for d in engine.generate(request)]


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


async def test_info_describes_a_chat_model(engine: TorchEngine) -> None:
    info = engine.info
    assert info.supports_chat and not info.supports_embeddings and not info.supports_fim
    assert info.context_length == 256 and info.max_sequences == 2
    assert info.architecture == "LlamaForCausalLM"


async def test_usage_is_exact_and_max_tokens_honoured(engine: TorchEngine) -> None:
    request = chat(max_tokens=12, temperature=1.0, seed=3)
    prompt_tokens = await engine.count_prompt_tokens(request)
    deltas = await run(engine, request)
    final = deltas[-1]
    assert final.finish_reason is FinishReason.LENGTH and final.usage is not None
    assert final.usage.prompt_tokens == prompt_tokens > 10  # the ChatML template is counted
    assert final.usage.completion_tokens == 12 == sum(d.tokens for d in deltas)
    assert all(d.usage is None for d in deltas[:-1]) and len(deltas) > 2  # streamed, not one blob


async def test_ignore_eos_runs_past_the_end_of_sequence(engine: TorchEngine) -> None:
    """With every token taken for an end of sequence, a reply stops at its first token, unless
    ``ignore_eos`` asks for all of ``max_tokens``."""
    lm = engine._lm
    assert lm is not None
    eos, lm.eos_ids = lm.eos_ids, frozenset(range(lm.model.config.vocab_size))
    try:
        stopped = (await run(engine, chat(max_tokens=12, seed=1)))[-1]
        forced = (await run(engine, chat(max_tokens=12, seed=1, ignore_eos=True)))[-1]
    finally:
        lm.eos_ids = eos
    assert stopped.finish_reason is FinishReason.STOP and stopped.usage is not None
    assert stopped.usage.completion_tokens == 1
    assert forced.finish_reason is FinishReason.LENGTH and forced.usage is not None
    assert forced.usage.completion_tokens == 12


async def test_a_seed_reproduces_a_sample_and_greedy_is_deterministic(engine: TorchEngine) -> None:
    first = text_of(await run(engine, chat(temperature=1.0, top_p=0.9, seed=11)))
    again = text_of(await run(engine, chat(temperature=1.0, top_p=0.9, seed=11)))
    other = text_of(await run(engine, chat(temperature=1.0, top_p=0.9, seed=12)))
    assert first == again and first != other
    assert text_of(await run(engine, chat(temperature=0))) == text_of(await run(engine, chat(temperature=0)))


async def test_a_stop_string_ends_the_reply_before_it(engine: TorchEngine) -> None:
    full = text_of(await run(engine, chat(max_tokens=40, temperature=1.0, seed=5)))
    printable = [i for i in range(4, len(full) - 3) if full[i : i + 2].isalpha()]
    assert printable, full
    stop = full[printable[0] : printable[0] + 2]
    deltas = await run(engine, chat(max_tokens=40, temperature=1.0, seed=5, stop=("\x00never", stop)))
    assert text_of(deltas) == full[: full.find(stop)]
    final = deltas[-1]
    assert final.finish_reason is FinishReason.STOP and final.usage is not None
    assert final.usage.completion_tokens < 40


async def test_raw_prompts_logprobs_and_refusals(engine: TorchEngine) -> None:
    raw = GenerationRequest(
        "r", SamplingParams(max_tokens=5, temperature=0, logprobs=True, top_logprobs=2), prompt="The quick"
    )
    deltas = await run(engine, raw)
    logprobs = [lp for d in deltas for lp in d.logprobs]
    assert len(logprobs) == 5 and all(len(lp.top_logprobs) == 2 and lp.logprob <= 0 for lp in logprobs)
    assert logprobs[0].top_logprobs[0].logprob == logprobs[0].logprob  # greedy takes the best
    assert await engine.count_prompt_tokens(raw) == deltas[-1].usage.prompt_tokens  # type: ignore[union-attr]
    with pytest.raises(UnsupportedFeatureError, match=r"llama\.cpp"):
        await run(engine, chat(json_schema={"type": "object"}))
    with pytest.raises(UnsupportedFeatureError):
        await engine.embed(["text"])


def generation_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("alize-torch-gen"))


async def test_concurrency_is_bounded_and_closing_early_frees_the_thread(folder: Path) -> None:
    engine = TorchEngine(
        EngineConfig(kind="torch", model_path=folder, threads=1, parallel=1, ctx_per_slot=512)
    )
    before = generation_threads()  # the module's engine has its own
    await engine.start()
    try:
        # two sequences on a one-sequence engine: the second starts only when the first ends
        order: list[int] = []

        async def tagged(tag: int, seed: int) -> list[Delta]:
            deltas = []
            async for delta in engine.generate(chat(max_tokens=30, seed=seed)):
                order.append(tag)
                deltas.append(delta)
            return deltas

        both = await asyncio.gather(tagged(1, 1), tagged(2, 2))
        assert [d[-1].usage.completion_tokens for d in both] == [30, 30]  # type: ignore[union-attr]
        first = order[0]
        assert order == [first] * len(both[first - 1]) + [3 - first] * len(both[2 - first]), order
        assert generation_threads() <= before + 1

        # every decoding step is one forward pass of the model: count them
        passes = [0]
        engine._lm.model.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))  # type: ignore[union-attr]
        stream = engine.generate(chat(max_tokens=450, temperature=1.0, seed=4))
        received = 0
        async for delta in stream:
            received += delta.tokens
            if received >= 3:
                break
        await stream.aclose()  # returns once the worker thread has left its loop
        after_close = passes[0]
        assert after_close < 450
        # nothing runs on after the close: the count stays put while the engine idles
        await asyncio.sleep(0.5)
        assert passes[0] == after_close
        # the single slot is free: the next request's 3 tokens are the only passes run (this
        # caught the engine's outer generator leaving the inner one, and its thread, to the GC)
        # (ignore_eos: unseeded, the tiny model may sample its end token within 3)
        quick = await run(engine, chat(max_tokens=3, ignore_eos=True))
        assert quick[-1].usage is not None and quick[-1].usage.completion_tokens == 3
        assert passes[0] - after_close == 3
    finally:
        await engine.stop()
