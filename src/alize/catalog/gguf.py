"""What a GGUF model file says about itself, read without ever trusting the file.

:func:`read_gguf_info` parses in-process: the inspector child calls it, and so may code that
reads files it shipped itself (the packaged models) or the llama.cpp worker on the file it was
given to load. Any file that came from outside (``alize models add PATH``, an upload, a pack) is
read through :func:`alize.catalog.inspect.inspect_gguf` instead, in a sandboxed child process.

This module is the one home of what a GGUF file supports (FIM tokens, chat template, tools):
the catalog writes cards from :class:`GGUFInfo`, and the llama.cpp engine's worker reports
:class:`ModelTraits` (``GGUFInfo.traits``) from the same parse, so the two cannot disagree.
Only the header and metadata are read, never the tensor data: for SmolLM2-135M that is 0.08 s
of CPU where ``gguf.GGUFReader`` (which maps and indexes every tensor) took 4.3 s.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from alize.catalog.gguf_reader import (
    GGML_TYPES,
    ArraySummary,
    GGUFFormatError,
    GGUFHeader,
    Value,
    read_header,
)

MAX_LANGUAGES = 64

# Names llama.cpp gives ``general.file_type`` values (enum llama_ftype), without "MOSTLY_".
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4",
    40: "Q1_0",
}  # fmt: skip

# (prefix, suffix, middle) token spellings used by the FIM-trained model families we know.
FIM_TOKEN_TRIPLES: tuple[tuple[str, str, str], ...] = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SantaCoder, SmolLM-style
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, CodeGemma
    ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
    ("<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"),  # DeepSeek-Coder
    ("<|fim_begin|>", "<|fim_hole|>", "<|fim_end|>"),
    ("▁<PRE>", "▁<SUF>", "▁<MID>"),  # CodeLlama
    ("<PRE>", "<SUF>", "<MID>"),
)
# metadata keys naming the FIM token ids: current names first, then the older CodeLlama ones
_FIM_KEYS = (
    ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.fim_mid_token_id"),
    ("tokenizer.ggml.prefix_token_id", "tokenizer.ggml.suffix_token_id", "tokenizer.ggml.middle_token_id"),
)
_TOKENS_KEY = "tokenizer.ggml.tokens"
_ARCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_TOOLS_RE = re.compile(r"\btools\b|tool_call")


@dataclass(frozen=True, slots=True)
class ModelTraits:
    """What an engine needs to know about its model beyond what the runtime reports: a few
    fields, small enough to cross the worker's one-line start-up message (no chat template)."""

    architecture: str
    context_length: int | None = None
    embedding_length: int | None = None
    has_chat_template: bool = False
    supports_tools: bool = False
    fim_token_ids: tuple[int, int, int] | None = None

    @property
    def supports_fim(self) -> bool:
        return self.fim_token_ids is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelTraits:
        fim = data.get("fim_token_ids")
        return cls(
            architecture=str(data["architecture"]),
            context_length=data.get("context_length"),
            embedding_length=data.get("embedding_length"),
            has_chat_template=bool(data.get("has_chat_template")),
            supports_tools=bool(data.get("supports_tools")),
            fim_token_ids=(int(fim[0]), int(fim[1]), int(fim[2])) if fim else None,
        )


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """The facts about a GGUF file that the catalog and the engines need."""

    path: str
    size_bytes: int
    version: int
    architecture: str
    parameter_count: int
    tensor_count: int
    name: str | None = None
    organization: str | None = None
    license: str | None = None
    size_label: str | None = None
    languages: tuple[str, ...] = ()
    context_length: int | None = None
    embedding_length: int | None = None
    block_count: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None
    key_length: int | None = None
    value_length: int | None = None
    vocab_size: int | None = None
    tokenizer_model: str | None = None
    pooling_type: int | None = None
    file_type: int | None = None
    quantization: str | None = None
    chat_template: str | None = None
    template_mentions_tools: bool = False
    fim_prefix_token_id: int | None = None
    fim_suffix_token_id: int | None = None
    fim_middle_token_id: int | None = None

    @property
    def supports_fim(self) -> bool:
        return self.fim_token_ids is not None

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    @property
    def kv_values_per_token(self) -> int | None:
        """K and V values llama.cpp caches per token, over all layers: ``layers × KV heads ×
        (key + value head size)``, with llama.cpp's own defaults (KV heads = heads, head size =
        embedding / heads) where the file leaves a key out. None when the file cannot say
        (no layers or heads: an embedding-only or unusual architecture). Sliding-window layers
        (Gemma 3) are counted in full, so the figure is an upper bound there."""
        if not self.block_count or not self.head_count:
            return None
        kv_heads = self.head_count if self.head_count_kv is None else self.head_count_kv
        default = self.embedding_length // self.head_count if self.embedding_length else None
        key = self.key_length if self.key_length is not None else default
        value = self.value_length if self.value_length is not None else default
        if key is None or value is None:
            return None
        return self.block_count * kv_heads * (key + value)

    @property
    def fim_token_ids(self) -> tuple[int, int, int] | None:
        pre, suf, mid = self.fim_prefix_token_id, self.fim_suffix_token_id, self.fim_middle_token_id
        return (pre, suf, mid) if pre is not None and suf is not None and mid is not None else None

    @property
    def traits(self) -> ModelTraits:
        return ModelTraits(
            architecture=self.architecture,
            context_length=self.context_length,
            embedding_length=self.embedding_length,
            has_chat_template=self.has_chat_template,
            supports_tools=self.template_mentions_tools,
            fim_token_ids=self.fim_token_ids,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GGUFInfo:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["languages"] = tuple(kwargs.get("languages", ()))
        return cls(**kwargs)


def _typed(md: dict[str, Value], key: str, kind: type[int] | type[str]) -> Any:
    """``md[key]`` if present; a wrong type is an error, as it is for llama.cpp."""
    value = md.get(key)
    if value is None:
        return None
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise GGUFFormatError(f"metadata {key!r} should be an integer, not {type(value).__name__}")
    if kind is str and not isinstance(value, str):
        raise GGUFFormatError(f"metadata {key!r} should be a string, not {type(value).__name__}")
    return value


def _plain_int(md: dict[str, Value], key: str) -> int | None:
    """``md[key]`` when it is one integer; None otherwise (some architectures give per-layer
    arrays here, which llama.cpp accepts, so they must not make the file unreadable)."""
    value = md.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _quantization(header: GGUFHeader, file_type: int | None) -> str | None:
    if file_type is not None and file_type in FILE_TYPES:
        return FILE_TYPES[file_type]
    # No (known) file type: name the type holding most weights among the matrices.
    weights: Counter[int] = Counter()
    for t in header.tensors:
        if len(t.shape) >= 2:
            weights[t.ggml_type] += t.n_elements
    if not weights:
        return None
    return GGML_TYPES[weights.most_common(1)[0][0]][0]


def _fim_ids(md: dict[str, Value], vocab: list[str] | None) -> tuple[int | None, int | None, int | None]:
    n_vocab = len(vocab) if vocab is not None else None
    for keys in _FIM_KEYS:
        ids = [_typed(md, k, int) for k in keys]
        if all(i is not None for i in ids):
            if n_vocab is not None and any(not 0 <= i < n_vocab for i in ids):
                raise GGUFFormatError(f"FIM token ids {ids} lie outside the vocabulary of {n_vocab}")
            return ids[0], ids[1], ids[2]
    if vocab:
        wanted = {tok for triple in FIM_TOKEN_TRIPLES for tok in triple}
        index: dict[str, int] = {}
        for i, tok in enumerate(vocab):
            if tok in wanted:
                index.setdefault(tok, i)
        for triple in FIM_TOKEN_TRIPLES:
            if all(t in index for t in triple):
                return index[triple[0]], index[triple[1]], index[triple[2]]
    return None, None, None


def _languages(md: dict[str, Value]) -> tuple[str, ...]:
    value = md.get("general.languages")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and 0 < len(v) <= 16)[:MAX_LANGUAGES]


def info_from_header(path: Path, header: GGUFHeader) -> GGUFInfo:
    """Interpret a validated header: pick out architecture, context, template, FIM tokens…"""
    md = header.metadata
    arch = _typed(md, "general.architecture", str)
    if arch is None:
        raise GGUFFormatError("the file has no general.architecture; it is not a model llama.cpp can load")
    if not _ARCH_RE.match(arch):
        raise GGUFFormatError(f"general.architecture {arch[:80]!r} is not a valid architecture name")
    tokens = md.get(_TOKENS_KEY)
    vocab = [t for t in tokens if isinstance(t, str)] if isinstance(tokens, list) else None
    vocab_size = len(vocab) if vocab is not None else None
    if isinstance(tokens, ArraySummary):
        vocab_size = tokens.length
    if vocab_size is None:
        vocab_size = _typed(md, f"{arch}.vocab_size", int)
    template = _typed(md, "tokenizer.chat_template", str)
    file_type = _typed(md, "general.file_type", int)
    pre, suf, mid = _fim_ids(md, vocab)
    return GGUFInfo(
        path=str(path),
        size_bytes=header.file_size,
        version=header.version,
        architecture=arch,
        parameter_count=sum(t.n_elements for t in header.tensors),
        tensor_count=len(header.tensors),
        name=_typed(md, "general.name", str),
        organization=_typed(md, "general.organization", str),
        license=_typed(md, "general.license", str),
        size_label=_typed(md, "general.size_label", str),
        languages=_languages(md),
        context_length=_typed(md, f"{arch}.context_length", int),
        embedding_length=_typed(md, f"{arch}.embedding_length", int),
        block_count=_typed(md, f"{arch}.block_count", int),
        head_count=_plain_int(md, f"{arch}.attention.head_count"),
        head_count_kv=_plain_int(md, f"{arch}.attention.head_count_kv"),
        key_length=_plain_int(md, f"{arch}.attention.key_length"),
        value_length=_plain_int(md, f"{arch}.attention.value_length"),
        vocab_size=vocab_size,
        tokenizer_model=_typed(md, "tokenizer.ggml.model", str),
        pooling_type=_typed(md, f"{arch}.pooling_type", int),
        file_type=file_type,
        quantization=_quantization(header, file_type),
        chat_template=template or None,
        template_mentions_tools=bool(template and _TOOLS_RE.search(template)),
        fim_prefix_token_id=pre,
        fim_suffix_token_id=suf,
        fim_middle_token_id=mid,
    )


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Parse ``path`` in this process. Raises :class:`GGUFFormatError`. Use only on trusted files
    or inside the inspector process; for anything else call :func:`inspect_gguf`."""
    p = Path(path).absolute()
    return info_from_header(p, read_header(p, keep_arrays=(_TOKENS_KEY,)))
