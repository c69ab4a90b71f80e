"""The base model of a fine-tuning run, in PyTorch, read from the catalog's GGUF file.

``transformers`` reads llama-architecture GGUF files and dequantises them to float32 (it also
undoes llama.cpp's q/k row permutation, so the weights are in Hugging Face order). That takes
long: for SmolLM2-135M's Q4_1 file, about 20 s for the tokenizer and 10-90 s for the weights on
two busy cores (measured), so the converted folder is kept under the data dir, keyed by the
file's path, size and modification time, and later runs on that base load it in a second or two.

Only architectures whose LoRA adapters this package converts to GGUF are accepted (today:
llama, which covers SmolLM2, Llama and Mistral-family GGUFs); others are refused before a job is
queued, with a message saying the merged export is the way to serve them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alize.errors import InvalidRequestError

#: GGUF architectures whose adapters :mod:`alize.jobs.finetune.gguf_lora` writes
ADAPTER_ARCHITECTURES = frozenset({"llama"})
_MARKER = "alize-base.json"


@dataclass(frozen=True, slots=True)
class BaseFacts:
    """What a job needs to know about a base before loading it (read from the GGUF header)."""

    path: Path
    architecture: str
    context_length: int
    n_layers: int
    n_head: int
    n_head_kv: int
    embedding_length: int
    feed_forward_length: int
    vocab_size: int


@dataclass(slots=True)
class LoadedBase:
    facts: BaseFacts
    model: Any  # transformers PreTrainedModel (float32, CPU)
    tokenizer: Any  # transformers PreTrainedTokenizerFast with the GGUF's chat template


def read_base_facts(path: Path) -> BaseFacts:
    """The architecture and shapes of a GGUF base; a 400 if it cannot carry a LoRA adapter."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def scalar(key: str) -> Any:
        field = reader.fields.get(key)
        return None if field is None else field.contents()

    arch = str(scalar("general.architecture") or "")
    if arch not in ADAPTER_ARCHITECTURES:
        raise InvalidRequestError(
            f"fine-tuning supports bases of architecture {', '.join(sorted(ADAPTER_ARCHITECTURES))}; "
            f"this base is '{arch or 'unknown'}'",
            param="model",
            code="unsupported_base",
        )
    if scalar("tokenizer.chat_template") is None:
        raise InvalidRequestError(
            "this base has no chat template, so chat-format training data cannot be rendered for it",
            param="model",
            code="unsupported_base",
        )
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_head = int(scalar(f"{arch}.attention.head_count") or 0)
    return BaseFacts(
        path=path,
        architecture=arch,
        context_length=int(scalar(f"{arch}.context_length") or 0),
        n_layers=int(scalar(f"{arch}.block_count") or 0),
        n_head=n_head,
        n_head_kv=int(scalar(f"{arch}.attention.head_count_kv") or n_head),
        embedding_length=int(scalar(f"{arch}.embedding_length") or 0),
        feed_forward_length=int(scalar(f"{arch}.feed_forward_length") or 0),
        vocab_size=len(tokens.data) if tokens is not None else 0,
    )


def _cache_key(path: Path) -> str:
    stat = path.stat()
    raw = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def _load_from_gguf(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # The weights are plain float32 now; drop the GGUF "quantization" marker so the folder
    # saves and reloads as an ordinary checkpoint.
    model.hf_quantizer = None  # type: ignore[assignment]
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    return model, tokenizer


def load_base(facts: BaseFacts, cache_root: Path | None) -> LoadedBase:
    """The base in float32 with its tokenizer, from the converted cache when there is one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    folder = cache_root / _cache_key(facts.path) if cache_root is not None else None
    if folder is not None and (folder / _MARKER).is_file():
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        return LoadedBase(facts=facts, model=model, tokenizer=tokenizer)
    model, tokenizer = _load_from_gguf(facts.path)
    if folder is not None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".base-", dir=folder.parent))
        try:
            model.save_pretrained(str(staging))
            tokenizer.save_pretrained(str(staging))
            (staging / _MARKER).write_text(json.dumps({"gguf": str(facts.path)}))
            os.replace(staging, folder)  # atomic: a crash leaves no half-written cache
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return LoadedBase(facts=facts, model=model, tokenizer=tokenizer)
