"""The few GGUF facts the engine needs beyond what llama.cpp's server reports.

Read inside the worker process (which is isolated from the gateway), so a malformed file
can at worst fail that worker's start-up.
"""

from __future__ import annotations

from typing import Any

_FIM_KEYS = ("fim_pre_token_id", "fim_suf_token_id", "fim_mid_token_id")
_FIM_NAMES = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<PRE>", "<SUF>", "<MID>"),
)


def _scalar(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.contents()


def read_model_traits(path: str) -> dict[str, Any]:
    """Architecture, trained context, FIM token ids and tool support of the chat template."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    arch = _scalar(reader, "general.architecture")
    template = _scalar(reader, "tokenizer.chat_template")
    fim: list[int] | None = None
    ids = [_scalar(reader, f"tokenizer.ggml.{k}") for k in _FIM_KEYS]
    if all(isinstance(i, int) for i in ids):
        fim = [int(i) for i in ids]
    else:
        tokens_field = reader.fields.get("tokenizer.ggml.tokens")
        if tokens_field is not None:
            index = {tok: i for i, tok in enumerate(tokens_field.contents())}
            for names in _FIM_NAMES:
                if all(n in index for n in names):
                    fim = [index[n] for n in names]
                    break
    return {
        "architecture": arch,
        "context_length": _scalar(reader, f"{arch}.context_length"),
        "embedding_length": _scalar(reader, f"{arch}.embedding_length"),
        "has_chat_template": isinstance(template, str),
        "template_supports_tools": isinstance(template, str) and "tools" in template,
        "fim_token_ids": fim,
    }
