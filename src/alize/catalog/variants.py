"""Weight variants: a GGUF file rewritten with its weight matrices in another format.

``alize models tune`` measures which weight format this CPU decodes fastest; the candidates are
written here from the model's own file with the ``gguf`` package: every weight matrix stored in
the file's main format (the type holding most matrix elements, e.g. SmolLM2's Q4_1) is
dequantised and quantised again to the target (Q4_0, Q8_0, BF16); the rest (norms in F32, an
embedding table already kept in Q8_0) is copied as it is, and so is every metadata key but
``general.file_type``. Requantising from an already quantised file can only lose information, so
each variant's quality is measured (perplexity, :mod:`alize.deployments.tuning`) before it is
kept. Only files Alizé trusts are read here (the packaged or catalogued model file): the
``gguf`` reader maps the whole file.

Which formats are worth trying on this machine is :func:`candidate_formats`: Q4_0 (llama.cpp
repacks it into interleaved rows for AVX2/AVX-512/NEON at load), Q8_0 (no unpacking work, twice
the bytes), and BF16 only where both the CPU (AVX-512-BF16 or AMX) and the llama.cpp build's CPU
backend have the instructions (a build without them would emulate BF16, slowly).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

#: target format -> (ggml tensor type name, llama file type name)
FORMATS: dict[str, tuple[str, str]] = {
    "Q4_0": ("Q4_0", "MOSTLY_Q4_0"),
    "Q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "BF16": ("BF16", "MOSTLY_BF16"),
}
#: elements per quantisation block (a matrix row must be a whole number of blocks)
_BLOCK = {"Q4_0": 32, "Q8_0": 32, "BF16": 1}


class VariantError(ValueError):
    """The file cannot be rewritten in that format (the message says why)."""


@dataclass(frozen=True, slots=True)
class WrittenVariant:
    format: str
    path: Path
    size_bytes: int
    converted_tensors: int


def candidate_formats(cpu_flags: Collection[str], engine_features: str, current: str | None) -> list[str]:
    """The formats worth measuring here, the file's own excluded. ``engine_features`` is the
    llama.cpp build's own report (``xllamacpp.get_system_info()``: ``AVX512_BF16 = 1 | ...``)."""
    formats = ["Q4_0", "Q8_0"]
    cpu_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags))
    built = any(f"{name} = 1" in engine_features for name in ("AVX512_BF16", "AMX_BF16", "AMX_INT8"))
    if cpu_bf16 and built:
        formats.append("BF16")
    return [f for f in formats if f != (current or "").upper()]


def write_variant(
    source: Path,
    target: Path,
    fmt: str,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> WrittenVariant:
    """Write ``source`` with its main-format matrices in ``fmt`` to ``target`` (atomically: a
    temporary file renamed into place). Raises :class:`VariantError`."""
    import gguf
    import numpy as np
    from gguf import quants

    if fmt not in FORMATS:
        raise VariantError(f"unknown variant format {fmt!r} (known: {', '.join(FORMATS)})")
    qtype = gguf.GGMLQuantizationType[FORMATS[fmt][0]]
    reader = gguf.GGUFReader(str(source))
    weights: Counter[int] = Counter()
    for t in reader.tensors:
        if len(t.shape) >= 2:
            weights[int(t.tensor_type)] += int(t.n_elements)
    if not weights:
        raise VariantError(f"{source.name} has no weight matrices")
    main = gguf.GGMLQuantizationType(weights.most_common(1)[0][0])
    if main == qtype:
        raise VariantError(f"{source.name} is already {fmt}")
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        raise VariantError(f"{source.name} names no architecture")
    writer = gguf.GGUFWriter(None, str(arch_field.contents()), endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_file_type(int(gguf.LlamaFileType[FORMATS[fmt][1]]))
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    data: list[tuple[str, np.ndarray, gguf.GGMLQuantizationType]] = []
    converted = 0
    total = len(reader.tensors)
    for i, tensor in enumerate(reader.tensors):
        array, ttype = tensor.data, tensor.tensor_type
        if len(tensor.shape) >= 2 and tensor.tensor_type == main:
            if int(tensor.shape[0]) % _BLOCK[fmt]:
                raise VariantError(f"{tensor.name}: rows of {int(tensor.shape[0])} are not blocks of {fmt}")
            array = quants.quantize(quants.dequantize(tensor.data, main), qtype)
            ttype = qtype
            converted += 1
        data.append((tensor.name, array, ttype))
        if progress is not None:
            progress(i + 1, total)
    for name, array, ttype in data:
        writer.add_tensor_info(name, array.shape, array.dtype, array.nbytes, raw_dtype=ttype)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        writer.write_header_to_file(path=partial)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, array, _ in data:
            writer.write_tensor_data(array)
        writer.close()
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return WrittenVariant(fmt, target, target.stat().st_size, converted)


def variant_path(variants_dir: Path, model_id: str, source: Path, fmt: str) -> Path:
    """Where the ``fmt`` variant of ``model_id`` lives under ``variants_dir``."""
    safe = model_id.replace("/", "_").replace(":", "_")
    return variants_dir / safe / f"{source.stem}.{fmt}.gguf"
