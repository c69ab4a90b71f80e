"""A trained LoRA folded into a full copy of its base GGUF: the export for bases whose adapters
llama.cpp cannot load, or for a model that must run without an adapter's per-request cost.

The base file is copied as it is (every metadata key, every tensor in its own quantisation,
bytes untouched) except the adapted weights: each is dequantised with gguf's own
``quants.dequantize``, gets ``alpha / rank * B @ A`` added (PEFT's scaling, the same delta
llama.cpp applies at scale 1 from the adapter file), and is stored as F16 (F32 when the base
held it in F32). Names come from gguf's tensor-name map and the llama q/k row permutation from
:mod:`alize.jobs.finetune.gguf_lora`, so the merged model and the adapter are the same model; a
test checks that llama.cpp gives the same greedy tokens for both.

Nothing here is specific to an architecture beyond that permutation: the base's own tensor
names and metadata are reused, so any GGUF whose weights ``transformers`` can train is served
by the llama.cpp build that served its base.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alize.jobs.finetune.base import BaseFacts
from alize.jobs.finetune.gguf_lora import gguf_pairs


def _deltas(state: Mapping[str, Any], facts: BaseFacts, alpha: float) -> dict[str, Any]:
    """GGUF weight name -> the float32 update the adapter adds to it."""
    return {target: (float(alpha) / a.shape[0]) * (b @ a) for target, a, b in gguf_pairs(state, facts)}


def write_merged_gguf(
    state: Mapping[str, Any], facts: BaseFacts, *, alpha: float, path: Path, name: str = ""
) -> Path:
    """Write the base with the adapter merged in to ``path``; returns it."""
    import gguf
    import numpy as np

    deltas = _deltas(state, facts, alpha)
    reader = gguf.GGUFReader(str(facts.path))
    writer = gguf.GGUFWriter(str(path), facts.architecture)
    skip = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.ALIGNMENT}
    if name:
        skip.add(gguf.Keys.General.NAME)
        writer.add_name(name)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in skip:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)
    for tensor in reader.tensors:
        delta = deltas.pop(tensor.name, None)
        if delta is None:
            writer.add_tensor(
                tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type
            )
            continue
        weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(delta.shape) + delta
        dtype = np.float32 if tensor.tensor_type == gguf.GGMLQuantizationType.F32 else np.float16
        writer.add_tensor(tensor.name, np.ascontiguousarray(weight, dtype=dtype))
    if deltas:
        raise ValueError(f"the base has no tensor for {', '.join(sorted(deltas))}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
