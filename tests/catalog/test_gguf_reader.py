"""The strict GGUF header reader, case by case, plus a small fuzz: it must only ever answer
with a header or a GGUFFormatError."""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

from alize.catalog.gguf import read_gguf_info
from alize.catalog.gguf_reader import GGUFFormatError, read_header

STRING, ARRAY, UINT32, BOOL = 8, 9, 4, 7


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv_str(key: str, value: str) -> bytes:
    return s(key) + struct.pack("<I", STRING) + s(value)


def kv_u32(key: str, value: int) -> bytes:
    return s(key) + struct.pack("<II", UINT32, value)


def tensor(name: str, shape: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> bytes:
    return (
        s(name)
        + struct.pack("<I", len(shape))
        + struct.pack(f"<{len(shape)}Q", *shape)
        + struct.pack("<IQ", ggml_type, offset)
    )


ARCH = kv_str("general.architecture", "llama")


def build(
    tmp_path: Path,
    kvs: Sequence[bytes],
    tensors: Sequence[bytes] = (),
    data_bytes: int = 0,
    alignment: int = 32,
) -> Path:
    body = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors)
    body += b"\0" * (-len(body) % alignment) + b"\0" * data_bytes
    path = tmp_path / "case.gguf"
    path.write_bytes(body)
    return path


def test_minimal_valid_file(tmp_path: Path) -> None:
    path = build(tmp_path, [ARCH, kv_u32("llama.context_length", 64)], [tensor("w", (4, 2))], 32)
    header = read_header(path)
    assert header.version == 3 and header.tensors[0].n_elements == 8
    info = read_gguf_info(path)
    assert info.parameter_count == 8 and info.context_length == 64 and info.quantization == "F32"


@pytest.mark.parametrize(
    ("kvs", "tensors", "data", "reason"),
    [
        ([ARCH, ARCH], [], 0, "appears twice"),
        ([s("b") + struct.pack("<IB", BOOL, 2)], [], 0, "not 0 or 1"),
        ([s("k") + struct.pack("<I", 13) + b"\0" * 8], [], 0, "unknown value type 13"),
        ([s("k") + struct.pack("<IIQ", ARRAY, ARRAY, 1) + b"\0" * 16], [], 0, "array of arrays"),
        ([s(b"\xff\xfe") + struct.pack("<II", UINT32, 1)], [], 0, "not valid UTF-8"),
        ([ARCH], [tensor("w", (1, 1, 1, 1, 1))], 32, "5 dimensions"),
        ([ARCH], [tensor("w", (32,), ggml_type=99)], 128, "unknown type 99"),
        ([ARCH], [tensor("w", (4,), offset=8)], 64, "not 32-aligned"),
        ([ARCH], [tensor("w", (64,))], 32, "truncated"),
        ([ARCH, kv_u32("general.alignment", 3)], [tensor("w", (4,))], 32, "power of two"),
        ([ARCH], [tensor("w", (4,)), tensor("w", (4,), offset=32)], 64, "appears twice"),
        ([ARCH], [tensor("w", (33,), ggml_type=2)], 64, "not a multiple of 32"),
        ([ARCH], [tensor("w", (2**40, 2**40))], 32, "absurd shape"),
        ([ARCH], [s("x" * 300) + struct.pack("<IQIQ", 1, 4, 0, 0)], 32, "limit of 255"),
    ],
)
def test_header_defects(
    tmp_path: Path, kvs: list[bytes], tensors: list[bytes], data: int, reason: str
) -> None:
    path = build(tmp_path, kvs, tensors, data)
    with pytest.raises(GGUFFormatError, match=reason):
        read_header(path)


@pytest.mark.parametrize(
    ("kvs", "reason"),
    [
        ([kv_u32("llama.context_length", 4)], "no general.architecture"),
        ([kv_str("general.architecture", "../../etc")], "not a valid architecture name"),
        ([ARCH, kv_str("llama.context_length", "lots")], "should be an integer"),
        (
            [ARCH]
            + [kv_u32(f"tokenizer.ggml.fim_{k}_token_id", 7) for k in ("pre", "suf", "mid")]
            + [s("tokenizer.ggml.tokens") + struct.pack("<IIQ", ARRAY, STRING, 2) + s("a") + s("b")],
            "outside the vocabulary",
        ),
    ],
)
def test_metadata_defects(tmp_path: Path, kvs: list[bytes], reason: str) -> None:
    with pytest.raises(GGUFFormatError, match=reason):
        read_gguf_info(build(tmp_path, kvs))


def test_nonexistent_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFFormatError, match="cannot open"):
        read_header(tmp_path / "missing.gguf")


def _header_end(path: Path) -> int:
    header = read_header(path)
    return header.data_offset


def test_fuzz_truncation_and_corruption(tmp_path: Path) -> None:
    original = write_tiny_llama_gguf(tmp_path / "tiny.gguf", with_fim=True).read_bytes()
    end = _header_end(tmp_path / "tiny.gguf")
    case = tmp_path / "fuzz.gguf"
    rng = random.Random(1234)
    cuts = sorted({*range(0, 64), *rng.sample(range(64, end), 150), end, len(original) - 1})
    for cut in cuts:
        case.write_bytes(original[:cut])
        with pytest.raises(GGUFFormatError):
            read_gguf_info(case)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(400):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(0, end)] = rng.randrange(256)
        case.write_bytes(bytes(data))
        try:
            read_gguf_info(case)
            outcomes["ok"] += 1
        except GGUFFormatError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 400
