"""The memory estimate's KV cache comes from the model's metadata and matches what llama.cpp holds.

The old estimate guessed the KV bytes per token as ``parameters ** (2/3)``: 262 KB for SmolLM2,
eleven times the real 23 KB, so the default 16 × 4096 slots were planned at 16 GiB and any
budget below that refused the default deployment. These tests pin the formula on a file whose
shape is known, and check the estimate against the resident memory of a real worker.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import N_EMBD, N_HEAD, N_LAYERS, write_tiny_llama_gguf

from alize.catalog.builtin import builtin_card
from alize.catalog.from_files import card_from_gguf
from alize.catalog.gguf import read_gguf_info
from alize.catalog.sources import smollm2_gguf_path
from alize.config import EngineSettings
from alize.deployments.lifecycle import KV_BYTES_PER_VALUE, MIB, estimate_memory, resident_bytes
from alize.engines.base import EngineConfig
from alize.engines.llamacpp.engine import LlamaCppEngine

GIB = 1024 * MIB


@pytest.mark.parametrize("n_head_kv", [N_HEAD, 1])
def test_kv_values_per_token_is_layers_times_kv_heads_times_head_sizes(
    tmp_path: Path, n_head_kv: int
) -> None:
    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf", n_head_kv=n_head_kv)
    head_size = N_EMBD // N_HEAD  # the tiny file has no key_length: llama.cpp's default applies
    expected = N_LAYERS * n_head_kv * (head_size + head_size)
    assert read_gguf_info(path).kv_values_per_token == expected
    card = card_from_gguf(path)  # through the sandboxed inspector, onto the card
    assert card.kv_values_per_token == expected
    engine = EngineConfig(kind="llamacpp", parallel=3, ctx_per_slot=100, cache_ram_mib=0)
    without_kv = estimate_memory(
        EngineConfig(kind="llamacpp", parallel=3, ctx_per_slot=0, cache_ram_mib=0),
        size_bytes=1000,
        parameter_count=card.parameter_count,
        replicas=1,
        kv_values_per_token=expected,
    )
    with_kv = estimate_memory(
        engine,
        size_bytes=1000,
        parameter_count=card.parameter_count,
        replicas=1,
        kv_values_per_token=expected,
    )
    assert with_kv - without_kv == 3 * 100 * expected * KV_BYTES_PER_VALUE
    q8 = estimate_memory(
        dataclasses.replace(engine, kv_cache_type="q8_0"),
        size_bytes=1000,
        parameter_count=card.parameter_count,
        replicas=1,
        kv_values_per_token=expected,
    )  # a tuned q8_0 cache: blocks of 32 values in 34 bytes
    assert q8 - without_kv == 3 * 100 * int(expected * 34 / 32)


def test_smollm2_default_deployment_is_planned_at_its_real_kv_size() -> None:
    """30 layers × 3 KV heads × (64 + 64) × 2 bytes = 23,040 bytes a token, so the default
    16 × 4096 slots take 1.41 GiB of KV, not the 16 GiB the old guess planned."""
    card = builtin_card("smollm2-135m-instruct")
    assert card.kv_values_per_token == 30 * 3 * (64 + 64)
    defaults = EngineSettings()
    engine = EngineConfig(
        kind="llamacpp",
        parallel=defaults.parallel,
        ctx_per_slot=defaults.ctx_per_slot,
        cache_ram_mib=defaults.cache_ram_mib,
    )
    planned = estimate_memory(
        engine,
        size_bytes=card.size_bytes,
        parameter_count=card.parameter_count,
        replicas=1,
        kv_values_per_token=card.kv_values_per_token,
    )
    kv = defaults.parallel * defaults.ctx_per_slot * 23_040
    assert planned == (card.size_bytes or 0) + kv + defaults.cache_ram_mib * MIB + 64 * MIB
    assert planned < 2 * GIB


async def _resident(parallel: int, ctx_per_slot: int) -> int:
    engine = LlamaCppEngine(
        EngineConfig(
            kind="llamacpp",
            model_path=smollm2_gguf_path(),
            parallel=parallel,
            ctx_per_slot=ctx_per_slot,
            cache_ram_mib=0,
            threads=1,
        )
    )
    await engine.start()
    try:
        assert engine.pid is not None
        rss = resident_bytes([engine.pid])
        assert rss is not None
        return rss
    finally:
        await engine.stop()


@pytest.mark.timeout(120)
async def test_the_estimate_matches_the_resident_memory_of_a_smollm2_worker() -> None:
    """llama.cpp clears its KV buffer when it loads, so the cache is resident at once: the
    worker's resident memory grows by the estimate's KV size when the context grows (measured:
    354.6 MiB more for 16,128 more tokens, the formula says 354.4 MiB)."""
    card = builtin_card("smollm2-135m-instruct")

    def planned(parallel: int, ctx_per_slot: int) -> int:
        engine = EngineConfig(kind="llamacpp", parallel=parallel, ctx_per_slot=ctx_per_slot, cache_ram_mib=0)
        return estimate_memory(
            engine,
            size_bytes=card.size_bytes,
            parameter_count=card.parameter_count,
            replicas=1,
            kv_values_per_token=card.kv_values_per_token,
        )

    small, large = await _resident(1, 256), await _resident(2, 8192)
    grown, planned_growth = large - small, planned(2, 8192) - planned(1, 256)
    assert abs(grown - planned_growth) < 0.05 * planned_growth, (grown // MIB, planned_growth // MIB)
    # and the whole plan is within a quarter of what the worker holds (weights, KV, runtime)
    assert abs(planned(2, 8192) - large) < 0.25 * large, (planned(2, 8192) // MIB, large // MIB)
