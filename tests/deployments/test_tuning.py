"""``alize models tune`` on a tiny GGUF written by the test: variants requantised with the gguf
package and loadable by llama.cpp, perplexity from llama.cpp's log-probabilities, the quality rule
that keeps or drops a variant, the bandwidth bound's bytes per token, the stored tuning checked
and applied to deployments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.fixtures.tiny_gguf import tiny_vocab, write_tiny_llama_gguf
from tests.support.installed import import_or_missing

import_or_missing("xllamacpp")

from alize.catalog import tuning as tuning_rules  # noqa: E402
from alize.catalog.cards import GGUFFileSource  # noqa: E402
from alize.catalog.gguf import read_gguf_info  # noqa: E402
from alize.catalog.gguf_reader import read_header  # noqa: E402
from alize.catalog.service import CatalogService  # noqa: E402
from alize.catalog.tuning import Tuning  # noqa: E402
from alize.catalog.variants import VariantError, candidate_formats, write_variant  # noqa: E402
from alize.config import EngineSettings  # noqa: E402
from alize.deployment_config import DeploymentConfig  # noqa: E402
from alize.deployments import tuning as tuner_module  # noqa: E402
from alize.deployments.bandwidth import bytes_per_token  # noqa: E402
from alize.deployments.specs import engine_config  # noqa: E402
from alize.deployments.tuning import TunePlan, Tuner  # noqa: E402
from alize.engines.base import EngineConfig  # noqa: E402
from alize.errors import InvalidRequestError  # noqa: E402
from alize.store import Database  # noqa: E402
from alize.store.testing import temporary_database  # noqa: E402

PLAN = TunePlan(
    runs=1,
    prompt_tokens=16,
    decode_tokens=8,
    perplexity_tokens=40,
    slots=False,
    threads=(1,),
    flash_attn=(),
    batch_sizes=(),
    kv_cache_types=("q8_0",),
    formats=("Q8_0",),
    defaults=EngineConfig(kind="llamacpp", threads=1, batch_size=512),
    start_parallel=1,
    start_ctx_per_slot=128,
)


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database("sqlite", tmp_path) as database:
        yield database


def test_a_variant_keeps_metadata_and_converts_the_main_format(tmp_path: Path) -> None:
    source = write_tiny_llama_gguf(tmp_path / "tiny.gguf", with_fim=True)
    written = write_variant(source, tmp_path / "v" / "tiny.Q8_0.gguf", "Q8_0")
    before, after = read_gguf_info(source), read_gguf_info(written.path)
    assert (before.quantization, after.quantization) == ("F32", "Q8_0")
    assert after.parameter_count == before.parameter_count and after.tensor_count == before.tensor_count
    assert after.chat_template == before.chat_template and after.fim_token_ids == before.fim_token_ids
    types = {t.name: t.ggml_type for t in read_header(written.path).tensors}
    assert types["blk.0.attn_q.weight"] == 8 and types["blk.0.attn_norm.weight"] == 0  # Q8_0, F32
    assert written.size_bytes < source.stat().st_size / 3
    assert not list((tmp_path / "v").glob(".*partial"))
    with pytest.raises(VariantError, match="already"):
        write_variant(written.path, tmp_path / "again.gguf", "Q8_0")


def test_bf16_is_a_candidate_only_where_cpu_and_build_have_it() -> None:
    assert candidate_formats(["avx2"], "AVX2 = 1 |", "Q4_1") == ["Q4_0", "Q8_0"]
    assert candidate_formats(["avx512_bf16"], "AVX2 = 1 |", "Q4_1") == ["Q4_0", "Q8_0"]
    assert candidate_formats(["avx512_bf16"], "AVX512_BF16 = 1 |", "Q4_0") == ["Q8_0", "BF16"]


def test_bytes_per_token_leaves_out_the_embedding_rows_of_an_untied_model(tmp_path: Path) -> None:
    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    tensors = read_header(path).tensors
    embd = next(t.n_bytes for t in tensors if t.name == "token_embd.weight")
    assert bytes_per_token(path) == sum(t.n_bytes for t in tensors) - embd


async def test_the_tuner_measures_keeps_what_holds_and_drops_what_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    tuning = await Tuner("tiny", source, PLAN, variants_dir=tmp_path / "variants", engine_features="").run()
    vocab = len(tiny_vocab(False)[0])
    original, q8 = tuning.variants
    # random weights at scale 0.02 predict nearly uniformly: the perplexity is about the vocabulary
    assert original.original and 0.8 * vocab < original.perplexity < 1.2 * vocab
    assert abs(q8.perplexity_change) < 0.01 and q8.kept and q8.path is not None
    chosen = tuning.variant_path == q8.path and tuning.variant_format == "Q8_0"
    assert chosen or (tuning.variant_path is None and q8.note == "quality holds, not faster")
    assert q8.bandwidth_bound_tokens_per_second and original.bandwidth_bound_tokens_per_second
    assert tuning.perplexity_tokens == 39 and tuning.decode_tokens_per_second > 0  # 40 - the first
    assert tuning.bandwidth is not None and tuning.bandwidth.bound_tokens_per_second > 0
    assert [t.setting for t in tuning.trials] == ["baseline", "kv_cache_type"]
    # a q8_0 cache needs heads of 32 values or more (its blocks): the tiny model's 16 fail to
    # start, which is a trial that failed, not a failed tuning
    assert tuning.trials[1].note.startswith("failed") and tuning.settings.kv_cache_type == "f16"
    assert tuning.cold_start_s is not None and tuning.settings.threads == 1
    assert "decode" in tuning_rules.tuning_text(tuning)
    # a variant whose perplexity rises past the bound is dropped and its file removed
    monkeypatch.setattr(tuner_module, "PERPLEXITY_TOLERANCE", -1.0)
    strict = await Tuner("tiny", source, PLAN, variants_dir=tmp_path / "strict", engine_features="").run()
    dropped = strict.variants[1]
    assert not dropped.kept and dropped.path is None and strict.variant_path is None
    assert not list((tmp_path / "strict").rglob("*.gguf"))
    assert strict.settings.kv_cache_type == "f16"  # the q8_0 cache did not hold either


def _tuning(variant: Path | None) -> Tuning:
    return Tuning.model_validate(
        {
            "settings": {"threads": 3, "batch_size": 256, "flash_attn": "on", "kv_cache_type": "q8_0"},
            "variant_format": "Q8_0" if variant else None,
            "variant_path": str(variant) if variant else None,
            "baseline_decode_tokens_per_second": 10.0,
            "decode_tokens_per_second": 12.0,
            "prefill_tokens_per_second": 100.0,
            "perplexity_text": "t",
            "perplexity_tokens": 10,
            "machine": "m",
            "measured_at": "2026-12-01T00:00:00+00:00",
            "duration_s": 1.0,
        }
    )


async def test_a_stored_tuning_is_checked_and_deployments_start_with_it(db: Database, tmp_path: Path) -> None:
    catalog = CatalogService(db)
    source = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    card = await catalog.add_path(str(source), "tiny")
    other = write_tiny_llama_gguf(tmp_path / "other.gguf", n_head_kv=2)  # fewer parameters
    with pytest.raises(InvalidRequestError, match="not a file of"):
        await catalog.record_tuning("tiny", _tuning(other))
    variant = write_variant(source, tmp_path / "tiny.Q8_0.gguf", "Q8_0").path
    card = await catalog.record_tuning("tiny", _tuning(variant))
    assert card.tuning is not None and isinstance(card.source, GGUFFileSource)
    config = DeploymentConfig(name="t", model="tiny")
    engine = engine_config(config, card, kind="llamacpp", path=source, defaults=EngineSettings(threads=1))
    assert (engine.threads, engine.batch_size, engine.flash_attn, engine.kv_cache_type) == (
        3,
        256,
        "on",
        "q8_0",
    )
    off = EngineSettings(threads=1, use_tuning=False)
    plain = engine_config(config, card, kind="llamacpp", path=source, defaults=off)
    assert (plain.threads, plain.kv_cache_type, plain.flash_attn) == (1, "f16", "auto")
