"""A trained PEFT LoRA adapter as a GGUF LoRA adapter that llama.cpp loads beside its base.

The file llama.cpp expects (``llama-adapter.cpp``): ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, the base's ``general.architecture``, and for
each adapted weight ``W`` of the base two tensors ``<gguf name of W>.lora_a`` (the PEFT
``lora_A``, ``rank x in``) and ``.lora_b`` (``lora_B``, ``out x rank``). llama.cpp applies
``scale * alpha / rank * B (A x)``, which is PEFT's ``alpha / r`` scaling, so the adapter at
scale 1 is the trained model (rsLoRA would need another factor; it is not used).

Names go through gguf's own tensor-name map. For the llama architecture llama.cpp's GGUF stores
``attn_q`` and ``attn_k`` with their rows permuted (rotary pairs interleaved differently from
Hugging Face's layout); ``transformers`` undid that when it loaded the base, so the adapter's
output side, ``lora_b``, gets the same permutation here. Without it the adapter would be applied
to the wrong rows of q and k (a test checks that llama.cpp and the merged PyTorch model then give
the same greedy tokens, and that they do not without the permutation).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from alize.jobs.finetune.base import BaseFacts

#: the llama weights whose rows llama.cpp's GGUF permutes, and the head count of each
PERMUTED_ROWS = {"q_proj": "n_head", "k_proj": "n_head_kv"}


def permute_rows(weight: Any, n_head: int) -> Any:
    """llama.cpp's q/k row order from Hugging Face's (the converter's ``permute``)."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def tensor_names(facts: BaseFacts) -> Any:
    """gguf's Hugging Face -> GGUF tensor-name map for the base's architecture."""
    import gguf

    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == facts.architecture)
    return gguf.get_tensor_name_map(arch, facts.n_layers)


def _module_name(key: str) -> tuple[str, str]:
    """``base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight`` ->
    (``model.layers.0.self_attn.q_proj``, ``A``)."""
    name = key.removeprefix("base_model.model.")
    for side in ("A", "B"):
        for marker in (f".lora_{side}.default.weight", f".lora_{side}.weight"):
            if name.endswith(marker):
                return name[: -len(marker)], side
    raise ValueError(f"not a LoRA tensor: {key}")


def lora_pairs(state: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """(A, B) per adapted module, from a PEFT state dict."""
    halves: dict[str, dict[str, Any]] = {}
    for key, tensor in state.items():
        module, side = _module_name(key)
        halves.setdefault(module, {})[side] = tensor
    pairs: dict[str, tuple[Any, Any]] = {}
    for module, ab in halves.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"{module}: the adapter has only one of lora_A / lora_B")
        pairs[module] = (ab["A"], ab["B"])
    return pairs


def gguf_pairs(state: Mapping[str, Any], facts: BaseFacts) -> Iterator[tuple[str, Any, Any]]:
    """(GGUF weight name, A, B) per adapted weight, float32, sorted by module, B's rows in
    llama.cpp's q/k order: what both the adapter file and the merged export are built from."""
    import numpy as np

    names = tensor_names(facts)
    for module, (a, b) in sorted(lora_pairs(state).items()):
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise ValueError(f"{module} has no GGUF tensor name for the {facts.architecture} architecture")
        a_np = a.detach().to("cpu").float().numpy()
        b_np = b.detach().to("cpu").float().numpy()
        short = module.rsplit(".", 1)[-1]
        if facts.architecture == "llama" and short in PERMUTED_ROWS:
            b_np = permute_rows(b_np, getattr(facts, PERMUTED_ROWS[short]))
        yield (
            target,
            np.ascontiguousarray(a_np, dtype=np.float32),
            np.ascontiguousarray(b_np, dtype=np.float32),
        )


def write_lora_gguf(
    state: Mapping[str, Any], facts: BaseFacts, *, alpha: float, path: Path, name: str = ""
) -> Path:
    """Write the adapter (float32) to ``path``; returns it."""
    import gguf

    writer = gguf.GGUFWriter(str(path), facts.architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    if name:
        writer.add_name(name)
    for target, a, b in gguf_pairs(state, facts):
        writer.add_tensor(f"{target}.lora_a", a)
        writer.add_tensor(f"{target}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
