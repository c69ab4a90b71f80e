"""A small, strict reader for GGUF headers, written for files we do not trust.

Why not the ``gguf`` package: it memory-maps the whole file and believes every count it reads,
so a forged header (a tensor count of 2**62, a string "length" of a terabyte) turns into a huge
allocation or a crash. This reader reads only the header, through a bounded window, and checks
every count and length against hard limits *and* against the bytes the file can still hold
before acting on it. It also checks that each tensor's data lies inside the file, which is what
catches the common real-world failure: a model file truncated by an interrupted download.

It uses only the standard library so the isolated inspector process starts fast; it is still
meant to run in that process (see :mod:`alize.catalog.inspect_worker`), never in the server.
Every problem is reported as :class:`GGUFFormatError` with a message fit for an operator.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Hard ceilings, far above any real model, that keep a forged header from steering allocations.
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
MAX_KEY_BYTES = 65_535
MAX_STRING_BYTES = 4 * 1024 * 1024
MAX_ARRAY_LEN = 16_000_000
MAX_TENSOR_NAME_BYTES = 255
MAX_DIMS = 4
MAX_ELEMENTS = 2**62
#: string arrays at most this long are kept whole; longer ones only when asked for by key
SMALL_ARRAY_LEN = 1024

_WINDOW = 1024 * 1024

# value type id -> (struct format, size); STRING (8) and ARRAY (9) are handled apart
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<B", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_BOOL, _STRING, _ARRAY = 7, 8, 9

# ggml tensor type id -> (name, elements per block, bytes per block); from ggml.h
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}  # fmt: skip

Scalar = int | float | bool | str


class GGUFFormatError(ValueError):
    """The file is not a GGUF file we are willing to load; the message says why."""


@dataclass(frozen=True, slots=True)
class ArraySummary:
    """A metadata array we skipped over: only its element type and length are kept."""

    item_type: int
    length: int


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int:
        _, block, size = GGML_TYPES[self.ggml_type]
        return self.n_elements // block * size


Value = Scalar | list[Scalar] | ArraySummary


@dataclass(slots=True)
class GGUFHeader:
    version: int
    file_size: int
    metadata: dict[str, Value] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0


class _Cursor:
    """Sequential reads through a bounded window; every read is checked against the file size."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self.size = size
        self.pos = 0
        self._buf = b""
        self._buf_start = 0

    def remaining(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n < 0 or n > self.remaining():
            raise GGUFFormatError(
                f"file is truncated or corrupt: {what} needs {n} bytes at offset {self.pos}, "
                f"but only {self.remaining()} remain"
            )

    def read(self, n: int, what: str) -> bytes:
        self.need(n, what)
        start = self.pos - self._buf_start
        if start < 0 or start + n > len(self._buf):
            self._f.seek(self.pos)
            self._buf = self._f.read(max(n, _WINDOW))
            self._buf_start = self.pos
            start = 0
            if len(self._buf) < n:
                raise GGUFFormatError(f"file shrank while being read (at offset {self.pos})")
        self.pos += n
        return self._buf[start : start + n]

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.pos += n

    def unpack(self, fmt: str, size: int, what: str) -> int | float:
        value: int | float = struct.unpack(fmt, self.read(size, what))[0]
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", 8, what))

    def string(self, what: str, limit: int, *, strict: bool = False) -> str:
        n = self.u64(f"length of {what}")
        if n > limit:
            raise GGUFFormatError(f"{what} claims {n} bytes, more than the limit of {limit}")
        raw = self.read(n, what)
        try:
            return raw.decode("utf-8", errors="strict" if strict else "replace")
        except UnicodeDecodeError:
            raise GGUFFormatError(f"{what} at offset {self.pos - n} is not valid UTF-8") from None

    def skip_string(self, what: str) -> None:
        n = self.u64(f"length of {what}")
        if n > MAX_STRING_BYTES:
            raise GGUFFormatError(f"{what} claims {n} bytes, more than the limit of {MAX_STRING_BYTES}")
        self.skip(n, what)


def _read_scalar(cur: _Cursor, vtype: int, key: str) -> Scalar:
    if vtype == _STRING:
        return cur.string(f"value of {key!r}", MAX_STRING_BYTES)
    fmt, size = _SCALARS[vtype]
    value = cur.unpack(fmt, size, f"value of {key!r}")
    if vtype == _BOOL:
        if value not in (0, 1):
            raise GGUFFormatError(f"boolean {key!r} holds {value}, not 0 or 1")
        return bool(value)
    return value


def _check_type(vtype: int, key: str) -> None:
    if vtype not in _SCALARS and vtype not in (_STRING, _ARRAY):
        raise GGUFFormatError(f"metadata {key!r} has unknown value type {vtype}")


def _read_array(cur: _Cursor, key: str, keep: bool) -> list[Scalar] | ArraySummary:
    item_type = cur.u32(f"array type of {key!r}")
    _check_type(item_type, key)
    if item_type == _ARRAY:
        raise GGUFFormatError(f"metadata {key!r} is an array of arrays, which no model needs")
    length = cur.u64(f"array length of {key!r}")
    min_item = 8 if item_type == _STRING else _SCALARS[item_type][1]
    if length > MAX_ARRAY_LEN or length * min_item > cur.remaining():
        raise GGUFFormatError(
            f"metadata array {key!r} claims {length} items, more than the file can hold "
            f"(limit {MAX_ARRAY_LEN})"
        )
    if item_type != _STRING:
        if not keep:
            cur.skip(length * min_item, f"array {key!r}")
            return ArraySummary(item_type, length)
        return [_read_scalar(cur, item_type, key) for _ in range(length)]
    if keep or length <= SMALL_ARRAY_LEN:
        return [cur.string(f"item of {key!r}", MAX_STRING_BYTES) for _ in range(length)]
    for _ in range(length):
        cur.skip_string(f"item of {key!r}")
    return ArraySummary(item_type, length)


def _read_tensor_info(cur: _Cursor, index: int) -> TensorInfo:
    name = cur.string(f"name of tensor {index}", MAX_TENSOR_NAME_BYTES, strict=True)
    n_dims = cur.u32(f"dimension count of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions (expected 1 to {MAX_DIMS})")
    shape = tuple(cur.u64(f"shape of tensor {name!r}") for _ in range(n_dims))
    n = 1
    for d in shape:
        n *= d
        if n > MAX_ELEMENTS:
            raise GGUFFormatError(f"tensor {name!r} has an absurd shape {shape}")
    ggml_type = cur.u32(f"type of tensor {name!r}")
    if ggml_type not in GGML_TYPES:
        raise GGUFFormatError(f"tensor {name!r} has unknown type {ggml_type}")
    _, block, _ = GGML_TYPES[ggml_type]
    if shape[0] % block:
        raise GGUFFormatError(f"tensor {name!r}: row length {shape[0]} is not a multiple of {block}")
    offset = cur.u64(f"offset of tensor {name!r}")
    return TensorInfo(name=name, shape=shape, ggml_type=ggml_type, offset=offset)


def _read_prelude(cur: _Cursor) -> tuple[int, int, int]:
    magic = cur.read(4, "magic") if cur.size >= 4 else b""
    if magic != MAGIC:
        raise GGUFFormatError(f"not a GGUF file: the first bytes are {magic!r}, expected {MAGIC!r}")
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFFormatError(
            f"unsupported GGUF version {version} (supported: {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    tensor_count = cur.u64("tensor count")
    kv_count = cur.u64("metadata count")
    # Smallest possible tensor info: name length (8) + 1-byte name + n_dims (4) + one dim (8)
    # + type (4) + offset (8); smallest key/value: key length (8) + 1-byte key + type (4) + 1.
    if tensor_count > MAX_TENSORS or tensor_count * 33 > cur.remaining():
        raise GGUFFormatError(f"absurd tensor count {tensor_count} for a file of {cur.size} bytes")
    if kv_count > MAX_KV or kv_count * 14 > cur.remaining():
        raise GGUFFormatError(f"absurd metadata count {kv_count} for a file of {cur.size} bytes")
    return version, tensor_count, kv_count


def _check_tensor_data(header: GGUFHeader, alignment: int) -> None:
    seen: set[str] = set()
    data_size = header.file_size - header.data_offset
    for t in header.tensors:
        if t.name in seen:
            raise GGUFFormatError(f"tensor {t.name!r} appears twice")
        seen.add(t.name)
        if t.offset % alignment:
            raise GGUFFormatError(f"tensor {t.name!r} data offset {t.offset} is not {alignment}-aligned")
        if t.offset + t.n_bytes > data_size:
            raise GGUFFormatError(
                f"file is truncated: tensor {t.name!r} needs bytes up to "
                f"{header.data_offset + t.offset + t.n_bytes}, but the file has {header.file_size}"
            )


def read_header(path: str | os.PathLike[str], keep_arrays: Collection[str] = ()) -> GGUFHeader:
    """Read and validate the header of the GGUF file at ``path``.

    Numeric arrays are skipped (an :class:`ArraySummary` stands in for them) unless their key is
    in ``keep_arrays``; string arrays are kept when short or named in ``keep_arrays``.
    """
    p = Path(path)
    try:
        f = p.open("rb")
    except OSError as exc:
        raise GGUFFormatError(f"cannot open the file: {exc.strerror or exc}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        cur = _Cursor(f, size)
        version, tensor_count, kv_count = _read_prelude(cur)
        header = GGUFHeader(version=version, file_size=size)
        for _ in range(kv_count):
            key = cur.string("metadata key", MAX_KEY_BYTES, strict=True)
            if key in header.metadata:
                raise GGUFFormatError(f"metadata key {key!r} appears twice")
            vtype = cur.u32(f"type of {key!r}")
            _check_type(vtype, key)
            if vtype == _ARRAY:
                header.metadata[key] = _read_array(cur, key, key in keep_arrays)
            else:
                header.metadata[key] = _read_scalar(cur, vtype, key)
        header.tensors = [_read_tensor_info(cur, i) for i in range(tensor_count)]
        alignment = header.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFFormatError(f"general.alignment must be a power of two, not {alignment!r}")
        header.data_offset = -(-cur.pos // alignment) * alignment
        _check_tensor_data(header, alignment)
        return header
