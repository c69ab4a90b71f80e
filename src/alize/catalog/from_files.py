"""Draft a model card from model files an operator points at (``alize models add PATH``).

The file is the only witness, so everything comes from it: a GGUF file through the sandboxed
inspector (:func:`alize.catalog.inspect.inspect_gguf`), a Hugging Face folder through its
``config.json``, README front matter and safetensors headers — never by loading weights. The
card gets no price (0) and no measured figures; the operator sets those afterwards.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from alize.catalog.cards import GGUFFileSource, HFFolderSource, ModelCard, Task
from alize.catalog.gguf import GGUFInfo
from alize.catalog.inspect import DEFAULT_TIMEOUT_S, inspect_gguf
from alize.catalog.safetensors_header import SafetensorsFormatError, read_safetensors_header
from alize.errors import InvalidRequestError, ValidationFailedError

INVALID_MODEL_FOLDER = "invalid_model_folder"
MAX_JSON_BYTES = 4 * 1024 * 1024
MAX_SHARDS = 1000
# llama.cpp architectures that produce embeddings rather than text
EMBEDDING_ARCHITECTURES = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert"}
)
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")
_GENERIC_NAMES = frozenset({"model", "models", "weights", "checkpoint", "hf", "snapshot"})
_LANG_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def slug(text: str) -> str:
    """A model id from a file or folder name: 'SmolLM2-135M.Q4_1' -> 'smollm2-135m.q4_1'."""
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:128].strip("-._")
    return s or "model"


def _card(data: dict[str, Any]) -> ModelCard:
    try:
        return ModelCard.model_validate(data)
    except ValueError as exc:
        raise ValidationFailedError(f"Could not build a model card from the file: {exc}") from None


def card_from_gguf_info(info: GGUFInfo, id: str | None = None) -> ModelCard:
    """The card a GGUF file's own metadata supports (no inspection here: ``info`` is given)."""
    path = Path(info.path)
    tasks: list[Task]
    if info.architecture in EMBEDDING_ARCHITECTURES or (info.pooling_type or 0) > 0:
        tasks = ["embeddings"]
    else:
        tasks = ["chat", "completion"] if info.has_chat_template else ["completion"]
        if info.supports_fim:
            tasks.append("fim")
    if not info.context_length:
        raise InvalidRequestError(
            f"'{path.name}' does not say its context length ({info.architecture}.context_length)",
            param="path",
            code="invalid_model_file",
        )
    return _card(
        {
            "id": id or slug(path.stem),
            "display_name": info.name or path.stem,
            "publisher": info.organization or "unknown",
            "license": info.license or "unknown",
            "open_weights": True,
            "tasks": tasks,
            "languages": [code for code in info.languages if _LANG_RE.match(code)],
            "context_length": info.context_length,
            "architecture": info.architecture,
            "parameter_count": info.parameter_count,
            "quantization": info.quantization,
            "kv_values_per_token": info.kv_values_per_token,
            "size_bytes": info.size_bytes,
            "source": GGUFFileSource(path=str(path)),
            "has_chat_template": info.has_chat_template,
            "supports_fim": info.supports_fim,
            "supports_tools": info.template_mentions_tools,
            "embedding_dimensions": info.embedding_length if "embeddings" in tasks else None,
        }
    )


def card_from_gguf(
    path: str | os.PathLike[str], id: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> ModelCard:
    """Inspect an untrusted GGUF file in the sandbox and draft its card.

    Raises :class:`InvalidRequestError` (code ``invalid_model_file``) for a bad file."""
    return card_from_gguf_info(inspect_gguf(path, timeout_s=timeout_s), id)


# --- Hugging Face folders ------------------------------------------------------------------------


def _bad_folder(folder: Path, reason: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"'{folder}' is not a usable Hugging Face model folder: {reason}",
        param="path",
        code=INVALID_MODEL_FOLDER,
    )


def _read_json(folder: Path, name: str, *, required: bool = False) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        if required:
            raise _bad_folder(folder, f"it has no {name}")
        return {}
    if path.stat().st_size > MAX_JSON_BYTES:
        raise _bad_folder(folder, f"{name} is larger than {MAX_JSON_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _bad_folder(folder, f"{name} is not valid JSON") from None
    if not isinstance(data, dict):
        raise _bad_folder(folder, f"{name} is not a JSON object")
    return data


def read_front_matter(folder: Path) -> dict[str, str | list[str]]:
    """``license`` and ``language`` from README.md's YAML front matter (the flat subset HF uses)."""
    readme = folder / "README.md"
    if not readme.is_file() or readme.stat().st_size > MAX_JSON_BYTES:
        return {}
    lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    out: dict[str, str | list[str]] = {}
    key: str | None = None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if line.startswith(("- ", "  - ")) and key is not None:
            current = out.get(key)
            items = current if isinstance(current, list) else []
            items.append(line.strip()[2:].strip().strip("'\""))
            out[key] = items
        elif ":" in line and not line.startswith(" "):
            k, _, v = line.partition(":")
            key = k.strip()
            v = v.strip().strip("'\"")
            if v:
                out[key] = v
    return {k: v for k, v in out.items() if k in ("license", "language")}


def _weights(folder: Path) -> tuple[int, str | None, int]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise _bad_folder(folder, "it has no *.safetensors weights")
    if len(files) > MAX_SHARDS:
        raise _bad_folder(folder, f"it has more than {MAX_SHARDS} safetensors files")
    params, size = 0, 0
    by_dtype: dict[str, int] = {}
    for f in files:
        try:
            summary = read_safetensors_header(f)
        except (SafetensorsFormatError, OSError) as exc:
            raise _bad_folder(folder, str(exc)) from None
        params += summary.parameter_count
        size += f.stat().st_size
        if summary.dominant_dtype:
            by_dtype[summary.dominant_dtype] = (
                by_dtype.get(summary.dominant_dtype, 0) + summary.parameter_count
            )
    dtype = max(by_dtype, key=lambda d: by_dtype[d]) if by_dtype else None
    return params, dtype, size


def card_from_hf_folder(path: str | os.PathLike[str], id: str | None = None) -> ModelCard:
    """Draft a card for a Hugging Face folder, served by the PyTorch engine.

    Sentence-transformers folders (``modules.json``) and bare encoders become embedding models;
    ``*ForCausalLM`` models become completion models (and chat models when the tokenizer has a
    chat template). Raises :class:`InvalidRequestError` (code ``invalid_model_folder``)."""
    folder = Path(path).expanduser().absolute()
    if not folder.is_dir():
        raise _bad_folder(folder, "no such folder")
    config = _read_json(folder, "config.json", required=True)
    if not any((folder / n).is_file() for n in ("tokenizer.json", "vocab.txt", "tokenizer.model")):
        raise _bad_folder(folder, "it has no tokenizer (tokenizer.json, vocab.txt or tokenizer.model)")
    params, dtype, size = _weights(folder)
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    st_config = _read_json(folder, "sentence_bert_config.json")
    pooling = _read_json(folder / "1_Pooling", "config.json") if (folder / "1_Pooling").is_dir() else {}
    tokenizer_config = _read_json(folder, "tokenizer_config.json")
    hidden = config.get("hidden_size") or config.get("d_model") or config.get("n_embd")
    context = next((config[k] for k in _CONTEXT_KEYS if isinstance(config.get(k), int)), None)

    tasks: list[Task]
    dims: int | None = None
    if (folder / "modules.json").is_file() or st_config or (arch and arch.endswith("Model")):
        tasks, dims = ["embeddings"], pooling.get("word_embedding_dimension") or hidden
        context = st_config.get("max_seq_length", context)
    elif arch and arch.endswith("ForCausalLM"):
        has_template = (
            bool(tokenizer_config.get("chat_template")) or (folder / "chat_template.jinja").is_file()
        )
        tasks = ["chat", "completion"] if has_template else ["completion"]
    else:
        raise _bad_folder(folder, f"architecture {arch!r} is neither an encoder nor a causal language model")
    if not isinstance(context, int) or context <= 0:
        raise _bad_folder(folder, "config.json gives no context length (max_position_embeddings)")

    # a generic folder name ("model") says less than the folder it sits in
    name = folder.parent.name if folder.name.lower() in _GENERIC_NAMES and folder.parent.name else folder.name
    front = read_front_matter(folder)
    langs = front.get("language", [])
    languages = [langs] if isinstance(langs, str) else langs
    license_ = front.get("license")
    return _card(
        {
            "id": id or slug(name),
            "display_name": name,
            "publisher": "unknown",
            "license": license_ if isinstance(license_, str) else "unknown",
            "open_weights": True,
            "tasks": tasks,
            "languages": [code for code in languages if _LANG_RE.match(code)],
            "context_length": context,
            "architecture": arch or config.get("model_type"),
            "parameter_count": params,
            "quantization": dtype,
            "size_bytes": size,
            "source": HFFolderSource(path=str(folder)),
            "has_chat_template": "chat" in tasks,
            "embedding_dimensions": dims,
        }
    )
