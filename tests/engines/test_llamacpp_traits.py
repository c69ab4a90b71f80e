"""The llama.cpp engine learns what its model supports from the catalog's GGUF reader.

One reader (``alize.catalog.gguf``) serves the card and the engine; these tests pin that the
worker reports exactly what the catalog reads, including FIM tokens found only by their names
and FIM spellings the engine once had no list of."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from tests.fixtures.tiny_gguf import FIM_TOKENS, tiny_vocab, write_tiny_llama_gguf

from alize.catalog.gguf import ModelTraits, read_gguf_info
from alize.engines.base import EngineConfig
from alize.engines.llamacpp.engine import LlamaCppEngine


def _metadata_only_gguf(path: Path, tokens: list[str], template: str | None) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(512)
    writer.add_token_list(tokens)
    if template is not None:
        writer.add_chat_template(template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    "triple",
    [("<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"), ("▁<PRE>", "▁<SUF>", "▁<MID>")],
    ids=["deepseek", "codellama"],
)
def test_traits_find_every_known_fim_spelling(tmp_path: Path, triple: tuple[str, str, str]) -> None:
    tokens = ["a", "b", *triple, "c"]
    traits = read_gguf_info(_metadata_only_gguf(tmp_path / "m.gguf", tokens, None)).traits
    assert traits.fim_token_ids == (2, 3, 4)
    assert traits.supports_fim
    assert not traits.has_chat_template


def test_traits_tools_follow_the_catalogs_rule(tmp_path: Path) -> None:
    with_tools = "{% if tools %}{{ tools | tojson }}{% endif %}{{ messages }}"
    info = read_gguf_info(_metadata_only_gguf(tmp_path / "t.gguf", ["a"], with_tools))
    assert info.traits.supports_tools is info.template_mentions_tools is True
    plain = read_gguf_info(_metadata_only_gguf(tmp_path / "p.gguf", ["a"], "{{ messages }}"))
    assert plain.traits.supports_tools is False
    assert plain.traits.has_chat_template


def test_traits_round_trip_through_the_start_up_message(tmp_path: Path) -> None:
    info = read_gguf_info(write_tiny_llama_gguf(tmp_path / "t.gguf", with_fim=True))
    wire = json.loads(json.dumps(info.traits.to_json()))
    assert ModelTraits.from_json(wire) == info.traits
    assert "chat_template" not in wire  # the template stays out of the one-line message


async def test_engine_reports_what_the_catalog_reads(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    # FIM tokens named only in the vocabulary (no fim_*_token_id keys): found by name
    path = write_tiny_llama_gguf(tmp_path / "fim.gguf", with_fim=True, fim_keys=False)
    engine = LlamaCppEngine(
        EngineConfig(kind="llamacpp", model_path=path, parallel=1, ctx_per_slot=128, threads=1)
    )
    try:
        info = await engine.start()
        catalog = read_gguf_info(path)
        assert info.supports_fim is catalog.supports_fim is True
        assert info.supports_chat is catalog.has_chat_template
        assert info.architecture == catalog.architecture == "llama"
        assert info.context_length == 128  # min(trained 256, ctx_per_slot)
        tokens = tiny_vocab(True)[0]
        assert engine._handle is not None
        assert engine._handle.traits.fim_token_ids == tuple(tokens.index(t) for t in FIM_TOKENS)
    finally:
        await engine.stop()
