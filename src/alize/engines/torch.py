"""The PyTorch engine: Hugging Face folders through ``transformers``.

Two kinds of folders, told apart by ``config.json``'s architecture:

* encoders (``*Model``, sentence-transformers folders) serve embeddings the way
  sentence-transformers does for all-MiniLM-L6-v2: tokenize (truncating at the model's
  ``max_seq_length``), run the encoder, mean-pool the token vectors under the attention mask, and
  L2-normalise, so cosine similarity is a dot product;
* causal language models (``*ForCausalLM``) generate text, streamed token by token with the
  tokenizer's chat template (:mod:`alize.engines.torch_generate`), at most ``parallel``
  sequences at a time, each in its own worker thread.

Weights are only ever read from the folder on disk (``local_files_only``, ``HF_HUB_OFFLINE``):
nothing is downloaded at run time. The model runs in a worker thread (``asyncio.to_thread``),
one batch at a time, so the event loop stays free; ``stop`` drops the model so its memory is
returned when the deployment scales to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import threading
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path
from typing import Any

from alize.domain import Delta, Embeddings, EngineInfo, GenerationRequest
from alize.engines.base import Engine, EngineConfig, loaded, refuse_adapter
from alize.engines.torch_generate import CausalLM, Decoder, stream
from alize.errors import EngineUnavailableError, InvalidRequestError, UnsupportedFeatureError

#: inputs encoded together in one forward pass (bounds the padded batch's memory)
BATCH_SIZE = 32


def _max_seq_length(folder: Path, config: dict[str, Any]) -> int:
    """sentence-transformers' truncation length if the folder says it, else the position limit."""
    st = folder / "sentence_bert_config.json"
    if st.is_file():
        value = json.loads(st.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    value = config.get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else 512


def _prepare(threads: int) -> None:
    """Offline for good (weights come from the folder only), quiet, and ``threads`` CPU threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a log is no terminal
    torch.set_num_threads(max(1, threads))


#: held while transformers' modules are imported and a model built: transformers imports its
#: classes lazily, and two threads importing at once (the start-up prewarm, and an embeddings
#: request that loads the model meanwhile) made one of them fail with "cannot import name
#: 'AutoModel' from 'transformers'" (seen in a clean-clone run: the request's 503)
_IMPORTING = threading.RLock()


def _prewarm(folder: Path, threads: int) -> None:
    """Import torch, transformers and the folder's model class, and run the kernels an encoder
    uses once: a fresh process's first load of all-MiniLM-L6-v2 took 6-12 s on two busy cores,
    nearly all of it imports and first-call initialisation; a load after this one, 0.2-0.5 s."""
    with _IMPORTING:
        _prewarm_now(folder, threads)


def _prewarm_now(folder: Path, threads: int) -> None:
    _prepare(threads)
    import torch
    from transformers import AutoConfig, AutoTokenizer  # noqa: F401  (the import is the point)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    mapping = MODEL_FOR_CAUSAL_LM_MAPPING if _is_causal_lm(folder) else MODEL_MAPPING
    with contextlib.suppress(KeyError):
        mapping[type(config)]  # imports the modeling module
    with torch.inference_mode():
        x = torch.randn(2, 8, 32)
        attn = torch.nn.functional.scaled_dot_product_attention(x, x, x)
        torch.nn.functional.layer_norm(torch.nn.functional.gelu(attn @ x.transpose(1, 2)), (8,))


def _is_causal_lm(folder: Path) -> bool:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    archs = config.get("architectures") or []
    return bool(archs) and isinstance(archs[0], str) and archs[0].endswith("ForCausalLM")


def _load_causal_lm(folder: Path, threads: int) -> CausalLM:
    with _IMPORTING:
        _prepare(threads)
        return CausalLM(folder, json.loads((folder / "config.json").read_text(encoding="utf-8")))


class _Loaded:
    """The tokenizer and model, touched only from worker threads."""

    def __init__(self, folder: Path, threads: int) -> None:
        with _IMPORTING:
            _prepare(threads)
            import torch
            from transformers import AutoModel, AutoTokenizer

            self.torch = torch
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        self.model.eval()
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.max_tokens = _max_seq_length(folder, config)
        self.dimensions = int(config.get("hidden_size") or self.model.config.hidden_size)
        self.architecture = (config.get("architectures") or [config.get("model_type")])[0]

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        encoded = self.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def encode(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        torch = self.torch
        vectors: list[tuple[float, ...]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), BATCH_SIZE):
                batch = self.tokenizer(
                    list(texts[start : start + BATCH_SIZE]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
                vectors.extend(tuple(row) for row in normed.tolist())
        return vectors


class TorchEngine(Engine):
    def __init__(self, config: EngineConfig) -> None:
        if config.model_path is None:
            raise InvalidRequestError("a PyTorch deployment needs a Hugging Face model folder", param="model")
        self._config = config
        self._folder = Path(config.model_path)
        self._loaded: _Loaded | None = None
        self._lm: CausalLM | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._info: EngineInfo | None = None
        self._lock = asyncio.Lock()

    @property
    def info(self) -> EngineInfo:
        return loaded(self._info)

    async def start(self) -> EngineInfo:
        async with self._lock:
            if self._info is not None:
                return self._info
            if not (self._folder / "config.json").is_file():
                raise EngineUnavailableError(f"'{self._folder}' is not a Hugging Face model folder")
            try:
                if await asyncio.to_thread(_is_causal_lm, self._folder):
                    return await self._start_generator()
                loaded = await asyncio.to_thread(_Loaded, self._folder, self._config.threads)
            except ImportError as exc:
                raise EngineUnavailableError(
                    f"the PyTorch engine needs torch and transformers installed: {exc}"
                ) from None
            except (OSError, ValueError) as exc:
                raise EngineUnavailableError(f"could not load '{self._folder}': {exc}") from None
            self._loaded = loaded
            self._info = EngineInfo(
                context_length=min(loaded.max_tokens, self._config.ctx_per_slot),
                max_sequences=self._config.parallel,
                supports_chat=False,
                supports_embeddings=True,
                embedding_dimensions=loaded.dimensions,
                architecture=loaded.architecture,
            )
            return self._info

    async def prewarm(self) -> None:
        if self._info is None and (self._folder / "config.json").is_file():
            await asyncio.to_thread(_prewarm, self._folder, self._config.threads)

    async def _start_generator(self) -> EngineInfo:
        cfg = self._config
        lm = await asyncio.to_thread(_load_causal_lm, self._folder, cfg.threads)
        self._lm = lm
        self._executor = ThreadPoolExecutor(cfg.parallel, thread_name_prefix="alize-torch-gen")
        self._info = EngineInfo(
            context_length=min(lm.context_length, cfg.ctx_per_slot),
            max_sequences=cfg.parallel,
            supports_chat=lm.has_chat_template,
            architecture=lm.architecture,
        )
        return self._info

    async def stop(self) -> None:
        async with self._lock:
            executor, self._executor = self._executor, None
            if executor is not None:  # queued sequences are dropped; running ones see their flag
                executor.shutdown(wait=False, cancel_futures=True)
            self._loaded, self._lm, self._info = None, None, None
            gc.collect()

    def _ready(self) -> _Loaded:
        return loaded(self._loaded)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        refuse_adapter(request, "PyTorch")
        lm, executor = self._lm, self._executor
        if lm is None or executor is None:
            self._ready()  # not loaded at all: 503
            raise UnsupportedFeatureError(
                "this deployment serves an embeddings model; use /v1/embeddings", param="model"
            )
        prompt = await asyncio.to_thread(lm.prompt_ids, request)
        # closing this generator must close the inner one now (its finally waits for the decoding
        # thread), not when the garbage collector gets to it: the thread ran on one pass otherwise
        async with aclosing(stream(Decoder(lm), executor, request, prompt)) as deltas:
            async for delta in deltas:
                yield delta

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        if self._lm is not None:
            return len(await asyncio.to_thread(self._lm.prompt_ids, request))
        text = request.prompt or "\n".join(m.content or "" for m in request.messages)
        counts = await asyncio.to_thread(self._ready().token_counts, [text])
        return counts[0]

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """Vectors for ``texts``; an input longer than the model takes is refused, not cut."""
        if self._lm is not None:
            raise UnsupportedFeatureError(
                "this deployment serves a generative model; use an embeddings model for /v1/embeddings",
                param="model",
            )
        loaded = self._ready()
        counts = await asyncio.to_thread(loaded.token_counts, texts)
        limit = self.info.context_length
        for index, count in enumerate(counts):
            if count > limit:
                raise InvalidRequestError(
                    f"input[{index}] is {count} tokens long; this model takes at most {limit} tokens "
                    "per input. Split the text into shorter passages.",
                    param="input",
                    code="input_too_long",
                )
        vectors = await asyncio.to_thread(loaded.encode, texts)
        return Embeddings(vectors=tuple(vectors), prompt_tokens=sum(counts))
