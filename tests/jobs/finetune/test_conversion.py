"""The conversion is right: the adapter on llama.cpp and the PyTorch model with the adapter merged
give the same greedy tokens with the same log-probabilities; without the q/k permutation of
``lora_b`` they do not. The engine sends explicit scales for every adapter, so the base and each
adapter answer as themselves whatever ran before on the slot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.fixtures.tiny_gguf import _byte_symbols
from tests.jobs.finetune.conftest import TOY, jsonl

from alize.domain import GenerationRequest, Message, SamplingParams
from alize.engines.base import EngineConfig, LoraAdapter
from alize.engines.llamacpp.engine import LlamaCppEngine
from alize.errors import InvalidRequestError
from alize.jobs.finetune import gguf_lora, gguf_merged
from alize.jobs.finetune.base import BaseFacts, load_base
from alize.jobs.finetune.dataset import parse_chat_jsonl, tokenize_all
from alize.jobs.finetune.hyperparams import Hyperparameters
from alize.jobs.finetune.trainer import Trainer

pytestmark = pytest.mark.e2e

PROMPTS = ("tax please", "home please", "the quick brown fox")
STEPS = 10
_BYTES = {c: b for b, c in enumerate(_byte_symbols())}


def _token_bytes(tokenizer: Any, token_id: int) -> bytes:
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if piece in tokenizer.all_special_tokens:
        return str(piece).encode()
    return bytes(_BYTES[c] for c in piece)


def _torch_greedy(model: Any, tokenizer: Any, prompt: str) -> list[tuple[bytes, float]]:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    out: list[tuple[bytes, float]] = []
    with torch.no_grad():
        for _ in range(STEPS):
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)
            token = int(logprobs.argmax())
            out.append((_token_bytes(tokenizer, token), float(logprobs[token])))
            if token == tokenizer.convert_tokens_to_ids("<|im_end|>"):
                break
            ids.append(token)
    return out


async def _engine_greedy(
    engine: LlamaCppEngine, prompt: str, adapter: str | None
) -> list[tuple[bytes, float]]:
    request = GenerationRequest(
        request_id="t",
        params=SamplingParams(max_tokens=STEPS, temperature=0.0, logprobs=True, top_logprobs=1),
        messages=(Message(role="user", content=prompt),),
        adapter=adapter,
    )
    out: list[tuple[bytes, float]] = []
    async for delta in engine.generate(request):
        out += [(bytes(lp.bytes or b""), lp.logprob) for lp in delta.logprobs]
    return out


def _same(a: list[tuple[bytes, float]], b: list[tuple[bytes, float]]) -> bool:
    """Same bytes out, and the same log-probabilities (within 0.01) while the tokens line up.

    llama.cpp keeps its KV cache in f16, which moves log-probabilities by up to ~5e-3 here
    (measured); a wrong adapter moves them by far more. It also reports an incomplete UTF-8
    character as one entry with the next token, so the comparison stops where pieces diverge."""
    text_a, text_b = b"".join(t for t, _ in a), b"".join(t for t, _ in b)
    n = min(len(text_a), len(text_b))
    if n < 2 or text_a[:n] != text_b[:n]:
        return False
    for (piece_a, lp_a), (piece_b, lp_b) in zip(a, b, strict=False):
        if piece_a != piece_b:
            break
        if abs(lp_a - lp_b) >= 1e-2:
            return False
    return True


@pytest.fixture(scope="module")
def trained(tiny_facts: BaseFacts, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A few steps at a high learning rate: an adapter far from zero on every projection."""
    folder = tmp_path_factory.mktemp("conversion")
    base = load_base(tiny_facts, folder / "cache")
    pristine = load_base(tiny_facts, folder / "cache")
    examples = tokenize_all(base.tokenizer, parse_chat_jsonl(jsonl(TOY)), seq_len=256, what="t")
    hyper = Hyperparameters(training_steps=8, batch_size=4, learning_rate=1e-2, warmup_fraction=0, seed=11)
    trainer = Trainer(base.model, hyper, examples, [], folder / "work", pad_id=0)
    trainer.run()
    state = trainer.adapter_state()
    good = gguf_lora.write_lora_gguf(state, tiny_facts, alpha=hyper.lora_alpha, path=folder / "ft.gguf")
    merged = trainer.merged_model().eval()
    return {
        "state": state,
        "good": good,
        "merged": merged,
        "base": pristine,
        "folder": folder,
        "hyper": hyper,
    }


@pytest.fixture
async def engine(tiny_gguf: Path, trained: dict[str, Any]) -> AsyncIterator[LlamaCppEngine]:
    config = EngineConfig(
        kind="llamacpp",
        model_path=tiny_gguf,
        parallel=1,  # one slot: every request runs where the previous one left its KV cache
        ctx_per_slot=256,
        threads=2,
        batch_size=64,
        cache_ram_mib=64,  # the engine must turn the RAM prompt cache off itself
        adapters=(LoraAdapter("ft", trained["good"]),),
    )
    eng = LlamaCppEngine(config)
    await eng.start()
    yield eng
    await eng.stop()


async def test_adapter_on_llamacpp_equals_merged_pytorch(
    engine: LlamaCppEngine, trained: dict[str, Any]
) -> None:
    tokenizer = trained["base"].tokenizer
    for prompt in PROMPTS:
        merged = _torch_greedy(trained["merged"], tokenizer, prompt)
        base = _torch_greedy(trained["base"].model, tokenizer, prompt)
        served = await _engine_greedy(engine, prompt, "ft")
        assert _same(served, merged), (prompt, served, merged)
        assert not _same(base, merged)  # the adapter changes the answer, so equality means something
        # the base right after the adapter, on the same slot and the same prompt: the base's answer
        assert _same(await _engine_greedy(engine, prompt, None), base)
        assert _same(await _engine_greedy(engine, prompt, "ft"), merged)


async def test_without_the_qk_permutation_the_answers_differ(
    tiny_gguf: Path, tiny_facts: BaseFacts, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf_lora, "permute_rows", lambda weight, n_head: weight)
    wrong = gguf_lora.write_lora_gguf(
        trained["state"], tiny_facts, alpha=trained["hyper"].lora_alpha, path=trained["folder"] / "wrong.gguf"
    )
    eng = LlamaCppEngine(
        EngineConfig(
            kind="llamacpp",
            model_path=tiny_gguf,
            parallel=1,
            ctx_per_slot=256,
            threads=2,
            adapters=(LoraAdapter("ft", wrong),),
        )
    )
    await eng.start()
    try:
        tokenizer = trained["base"].tokenizer
        results = [
            _same(await _engine_greedy(eng, p, "ft"), _torch_greedy(trained["merged"], tokenizer, p))
            for p in PROMPTS
        ]
        assert not all(results)
    finally:
        await eng.stop()


async def test_the_merged_export_on_llamacpp_equals_the_merged_pytorch_model(
    tiny_facts: BaseFacts, trained: dict[str, Any]
) -> None:
    """The fallback for bases whose adapters llama.cpp cannot load: the full model, no adapter."""
    path = gguf_merged.write_merged_gguf(
        trained["state"],
        tiny_facts,
        alpha=trained["hyper"].lora_alpha,
        path=trained["folder"] / "merged.gguf",
    )
    eng = LlamaCppEngine(
        EngineConfig(kind="llamacpp", model_path=path, parallel=1, ctx_per_slot=256, threads=2)
    )
    await eng.start()
    try:
        tokenizer = trained["base"].tokenizer
        for prompt in PROMPTS:
            served = await _engine_greedy(eng, prompt, None)
            assert _same(served, _torch_greedy(trained["merged"], tokenizer, prompt)), prompt
            assert not _same(served, _torch_greedy(trained["base"].model, tokenizer, prompt))
    finally:
        await eng.stop()


async def test_an_unknown_adapter_is_a_400(engine: LlamaCppEngine) -> None:
    with pytest.raises(InvalidRequestError, match="no adapter 'other'"):
        await _engine_greedy(engine, "hi", "other")


async def test_a_prefix_cached_under_an_adapter_never_serves_the_base(
    engine: LlamaCppEngine, trained: dict[str, Any]
) -> None:
    """adapter on P, base on Q, base on P: llama.cpp's RAM prompt cache would hand the third
    request P's KV as the adapter computed it (the slot's adapter set did not change between the
    second and third requests, so nothing clears it). The engine turns that cache off."""
    tokenizer = trained["base"].tokenizer
    first = "the quick brown fox jumps over the lazy dog " * 4
    other = "hello there, the weather is nice today " * 4
    await _engine_greedy(engine, first, "ft")
    await _engine_greedy(engine, other, None)
    assert _same(
        await _engine_greedy(engine, first, None), _torch_greedy(trained["base"].model, tokenizer, first)
    )
