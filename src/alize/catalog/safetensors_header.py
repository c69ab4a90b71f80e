"""Read a safetensors file's JSON header — shapes and dtypes — without loading any weights.

A safetensors file is ``u64 header length`` + ``JSON header`` + raw tensor bytes. The header
alone gives the parameter count and the storage dtype, which is all a model card needs, and
reading it is cheap and safe: the length is bounded before anything is allocated, and every
entry is checked to lie inside the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 32 * 1024 * 1024
MAX_TENSORS = 1_000_000

# bytes per element; dtypes not listed (sub-byte formats) are accepted without a size check
DTYPE_BYTES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip


class SafetensorsFormatError(ValueError):
    """The file is not a safetensors file we can read; the message says why."""


@dataclass(frozen=True, slots=True)
class SafetensorsSummary:
    #: elements in floating-point tensors (integer tensors are buffers such as position ids)
    parameter_count: int
    #: floating-point dtype holding most parameters, e.g. "F32", "BF16"
    dominant_dtype: str | None
    tensor_count: int
    metadata: dict[str, str]


def _entry(name: str, value: object, data_size: int) -> tuple[str, int]:
    if not isinstance(value, dict):
        raise SafetensorsFormatError(f"tensor {name!r}: header entry is not an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list):
        raise SafetensorsFormatError(f"tensor {name!r}: needs dtype, shape and data_offsets")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise SafetensorsFormatError(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
    if len(offsets) != 2 or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets):
        raise SafetensorsFormatError(f"tensor {name!r}: data_offsets must be two integers")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise SafetensorsFormatError(f"tensor {name!r}: data [{begin}, {end}) lies outside the file")
    n = math.prod(shape)
    if dtype in DTYPE_BYTES and n * DTYPE_BYTES[dtype] != end - begin:
        raise SafetensorsFormatError(f"tensor {name!r}: {dtype}{shape} does not fill {end - begin} bytes")
    return dtype, n


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsSummary:
    p = Path(path)
    with p.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise SafetensorsFormatError(f"{p.name} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw_len)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise SafetensorsFormatError(f"{p.name}: header length {n} is impossible for a {size}-byte file")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise SafetensorsFormatError(f"{p.name}: the header is not valid JSON") from None
    if not isinstance(header, dict) or len(header) > MAX_TENSORS:
        raise SafetensorsFormatError(f"{p.name}: the header is not a JSON object of tensors")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict):
        raise SafetensorsFormatError(f"{p.name}: __metadata__ is not an object")
    params: Counter[str] = Counter()
    for name, value in header.items():
        dtype, count = _entry(name, value, size - 8 - n)
        if dtype.startswith(("F", "BF")):
            params[dtype] += count
    return SafetensorsSummary(
        parameter_count=sum(params.values()),
        dominant_dtype=params.most_common(1)[0][0] if params else None,
        tensor_count=len(header),
        metadata={str(k): str(v) for k, v in meta.items()},
    )
