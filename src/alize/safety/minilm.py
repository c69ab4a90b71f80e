"""The English stage: all-MiniLM-L6-v2 fine-tuned end to end, run as int8 ONNX (no torch).

Model (trained by :mod:`alize.safety.finetune`): the six-layer MiniLM encoder, mean-pooled,
under one linear layer with a logit per head (see :mod:`alize.safety.categories`), all of it
fine-tuned on the dev set's training part plus ``data/extra.jsonl``. At training time it is
exported to ONNX, its attention, layer norms and GELUs fused by onnxruntime's transformer
optimizer, and its weights quantised to int8 (dynamic quantisation, ``reduce_range`` so the
same kernels are exact on CPUs without VNNI). What ships, in ``data/minilm/``:

* ``model.onnx``: the quantised graph (inputs ``input_ids`` and ``attention_mask``, int64,
  (batch, tokens); output ``logits``, (batch, heads));
* ``tokenizer.json``: MiniLM's word-piece tokenizer (the same file as the model package's);
* ``meta.json``: heads, window length, per-head thresholds chosen on out-of-fold predictions,
  which heads are gated, and the cross-validated figures the thresholds were chosen with.

Long texts: the model was trained on windows of ``max_tokens`` word pieces; a longer text is
judged on its **head and its tail** (its first and its last ``max_tokens - 2`` pieces, each a
window of its own, scored in one batch), taking the maximum per head. A 200-word text (~260
pieces) is then read almost whole at a fixed cost of two 128-token windows, whatever its length.
Thresholds were chosen on exactly this function.

Blend with the n-gram model: when ``meta.json`` gives an ``ngram_weight`` ``w > 0``, each head's
probability is ``(1 - w) * MiniLM + w * n-gram`` (the n-gram model of :mod:`alize.safety.classifier`,
maximum over its own windows), and the thresholds in ``meta.json`` are those of the blend. The
weight was chosen, like the thresholds, on 5-fold out-of-fold predictions of both models
(:mod:`alize.safety.finetune_select`); the n-gram model is a numpy pass of a few milliseconds.

Runtime dependencies: ``onnxruntime``, ``tokenizers`` and numpy. The graph's residual layer
norms are shipped unfused (``Add`` + ``LayerNormalization``) and the session does not fuse them
back (:mod:`alize.safety.onnx_unfuse`: onnxruntime's fused ``SkipLayerNormalization`` CPU kernel
took a quarter of each window's time, about 5 ms of a 200-word text).

Threads: a call uses ``threads`` threads (2 by default), and by default they share the call's
**windows**, not each window's operators: the session has one intra-op thread, the calling
thread runs the first window and worker threads the others, side by side (onnxruntime sessions
may run from several threads at once, and release the GIL). A 200-word text has exactly two
windows, so each core runs one whole window with no synchronisation between operators; with
``parallel="operators"`` (onnxruntime's intra-op threads, windows in turn) each of a window's
87 operators is split across the two threads and waits for the slower. Measured on the 2-core
VM, same session, two 128-token windows: 7.4 ms side by side, 9.7 ms with intra-op threads,
13.5 ms on one thread. One inter-op thread, sequential execution, all other graph optimisations,
and **no spin-waiting**: by default onnxruntime's pool threads spin between operators, which on
a 2-core machine shared with the server's own work (or other processes) steals the core the
next operator needs; on the 2-core VM this was measured on, turning spinning off took the
English stage's p99 for a 200-word text from 32 to 25 ms at a load average of 0.8, and batched
runs with spinning on reached 180 ms p99 (``bench/moderation.py --spinning`` measures it the
other way).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from alize.errors import ServiceUnavailableError
from alize.safety.calibration import GATE_HEAD, calibrate, sigmoid
from alize.safety.onnx_unfuse import DISABLED_OPTIMIZERS

F32 = npt.NDArray[np.float32]
MODEL_DIR_NAME = "minilm"
Parallelism = Literal["windows", "operators"]


class NgramScorer(Protocol):
    """The n-gram model as the blend needs it (:class:`alize.safety.classifier.ContentClassifier`)."""

    @property
    def heads(self) -> tuple[str, ...]: ...

    def window_max_probabilities(self, texts: list[str]) -> F32: ...


def default_model_dir() -> Path:
    """``alize/safety/data/minilm`` inside the installed package."""
    return Path(str(resources.files("alize.safety").joinpath("data", MODEL_DIR_NAME)))


def _unavailable(message: str) -> ServiceUnavailableError:
    return ServiceUnavailableError(message, code="moderation_unavailable")


def head_tail(ids: Sequence[int], span: int) -> list[list[int]]:
    """The text's pieces as windows of at most ``span``: all of it, or its head and its tail."""
    if len(ids) <= span:
        return [list(ids)]
    return [list(ids[:span]), list(ids[-span:])]


class WindowTokenizer:
    """Texts to ``[CLS] ... [SEP]`` windows (head and tail), shared by training and inference.

    The Rust tokenizer mutates state in ``encode_batch``; a lock makes it safe to share.
    """

    def __init__(self, path: Path, max_tokens: int) -> None:
        if not 8 <= max_tokens <= 512:
            raise ValueError(f"max_tokens out of range: {max_tokens}")
        self.max_tokens = max_tokens
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._lock = threading.Lock()
        cls, sep = self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")
        if cls is None or sep is None:
            raise _unavailable(f"tokenizer {path} has no [CLS]/[SEP]")
        self.cls, self.sep = int(cls), int(sep)

    def windows(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Token-id windows and, for each, the index of its text (every text gets one)."""
        with self._lock:
            encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        windows: list[list[int]] = []
        owners: list[int] = []
        for index, enc in enumerate(encodings):
            for piece in head_tail(enc.ids, self.max_tokens - 2):
                windows.append([self.cls, *piece, self.sep])
                owners.append(index)
        return windows, owners


def pad(windows: Sequence[Sequence[int]]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(ids, attention mask), right-padded with 0 to the longest window."""
    length = max(len(w) for w in windows)
    ids = np.zeros((len(windows), length), dtype=np.int64)
    mask = np.zeros((len(windows), length), dtype=np.int64)
    for row, window in enumerate(windows):
        ids[row, : len(window)] = window
        mask[row, : len(window)] = 1
    return ids, mask


def open_session(
    path: Path, *, threads: int = 2, spinning: bool = False, optimized_path: Path | None = None
) -> Any:
    """The onnxruntime session the English stage runs (see the module docstring for each option).

    ``optimized_path``: where onnxruntime should write the graph as it optimised it (tests read
    it to check which fusions ran). Raises onnxruntime's own errors for a bad file.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(
        str(path),
        options,
        providers=["CPUExecutionProvider"],
        # the shipped graph has its SkipLayerNormalization nodes unfused (onnx_unfuse.py): 8x faster
        disabled_optimizers=list(DISABLED_OPTIMIZERS),
    )


@dataclass(frozen=True)
class MiniLMMeta:
    heads: tuple[str, ...]
    max_tokens: int
    thresholds: F32
    gated: npt.NDArray[np.bool_]
    extra: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> MiniLMMeta:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _unavailable(f"cannot read {path}: {exc}") from exc
        heads = tuple(str(h) for h in raw["heads"])
        return cls(
            heads=heads,
            max_tokens=int(raw["max_tokens"]),
            thresholds=np.array([raw["thresholds"][h] for h in heads], dtype=np.float32),
            gated=np.array([h in raw["gated"] for h in heads], dtype=np.bool_),
            extra={k: v for k, v in raw.items() if k not in ("heads", "max_tokens", "thresholds", "gated")},
        )


class MiniLMClassifier:
    """Calibrated head scores from the shipped int8 ONNX MiniLM. Thread-safe; build once."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        threads: int = 2,
        spinning: bool = False,
        parallel: Parallelism = "windows",
        ngram: NgramScorer | None = None,
    ) -> None:
        """``threads``: the threads one call uses; ``parallel``: what they share, a call's windows
        (``"windows"``: one onnxruntime thread per window, windows run side by side) or each
        window's operators (``"operators"``: onnxruntime's intra-op threads, windows one after
        the other); ``spinning``: whether onnxruntime's threads spin-wait for work between
        operators (off by default; see the module docstring for all three); ``ngram``: the
        n-gram model to blend with (default: the packaged one, loaded only when ``meta.json``
        gives it a weight)."""
        if threads < 1:
            raise ValueError("threads must be >= 1")
        if parallel not in ("windows", "operators"):
            raise ValueError(f"parallel must be 'windows' or 'operators', got {parallel!r}")
        model_dir = model_dir or default_model_dir()
        try:
            import onnxruntime  # noqa: F401  (imported by open_session; checked here for a clear error)
        except ImportError as exc:  # a broken install, not a client error
            raise _unavailable("onnxruntime is not installed (pip install onnxruntime)") from exc
        self.meta = MiniLMMeta.load(model_dir / "meta.json")
        self.heads = self.meta.heads
        self.tokenizer = WindowTokenizer(model_dir / "tokenizer.json", self.meta.max_tokens)
        try:
            self._session = open_session(
                model_dir / "model.onnx", threads=threads if parallel == "operators" else 1, spinning=spinning
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise _unavailable(f"cannot load {model_dir / 'model.onnx'}: {exc}") from exc
        # a call's windows are dealt in turn to the calling thread and these workers
        self._pool = (
            ThreadPoolExecutor(threads - 1, thread_name_prefix="minilm")
            if parallel == "windows" and threads > 1
            else None
        )
        self._shares = threads if self._pool is not None else 1
        self._gate = self.heads.index(GATE_HEAD) if GATE_HEAD in self.heads else None
        self.ngram_weight = float(self.meta.extra.get("ngram_weight", 0.0))
        self._ngram: NgramScorer | None = None
        if self.ngram_weight > 0.0:
            if ngram is None:
                from alize.safety.classifier import ContentClassifier

                ngram = ContentClassifier.from_path()
            if tuple(ngram.heads) != self.heads:
                raise _unavailable("the n-gram model's heads differ from the MiniLM's")
            self._ngram = ngram

    def window_logits(self, windows: Sequence[Sequence[int]]) -> F32:
        """(windows, heads) logits, one ONNX run per window.

        One at a time, not padded batches: dynamic quantisation scales each activation tensor
        by its own range, padding included, so a window's score would depend on the others in
        its batch; alone, it does not (and no time goes into padding).
        """
        out = np.zeros((len(windows), len(self.heads)), dtype=np.float32)
        if not windows:
            return out
        shares = [range(k, len(windows), self._shares) for k in range(min(self._shares, len(windows)))]
        pool = self._pool
        later = [pool.submit(self._run_rows, windows, rows, out) for rows in shares[1:]] if pool else []
        self._run_rows(windows, shares[0], out)  # the calling thread's share, beside the workers'
        for future in later:
            future.result()
        return out

    def _run_rows(self, windows: Sequence[Sequence[int]], rows: range, out: F32) -> None:
        """The logits of ``windows[rows]`` into ``out`` (each share writes its own rows)."""
        for row in rows:
            out[row] = self._run(windows[row])

    def _run(self, window: Sequence[int]) -> F32:
        """One window's logits (onnxruntime sessions may run from several threads at once)."""
        ids = np.array([window], dtype=np.int64)
        (logits,) = self._session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        row: F32 = np.asarray(logits[0], dtype=np.float32)
        return row

    def raw_probabilities(self, texts: Sequence[str]) -> F32:
        """Uncalibrated head probabilities, the maximum over each text's head and tail windows."""
        out = np.zeros((len(texts), len(self.heads)), dtype=np.float32)
        if not texts:
            return out
        windows, owners = self.tokenizer.windows(texts)
        np.maximum.at(out, np.array(owners, dtype=np.int64), sigmoid(self.window_logits(windows)))
        return out

    def blended_probabilities(self, texts: Sequence[str]) -> F32:
        """The probabilities the thresholds apply to: the MiniLM's, blended with the n-gram model's."""
        raw = self.raw_probabilities(texts)
        if self._ngram is None or not len(texts):
            return raw
        ngram = self._ngram.window_max_probabilities(list(texts))
        out: F32 = ((1.0 - self.ngram_weight) * raw + self.ngram_weight * ngram).astype(np.float32)
        return out

    def scores(self, texts: Sequence[str]) -> F32:
        """Calibrated head scores (0.5 = default threshold), shape (len(texts), len(heads))."""
        return calibrate(self.blended_probabilities(texts), self.meta.thresholds, self.meta.gated, self._gate)

    def score_dicts(self, texts: list[str]) -> list[dict[str, float]]:
        return [
            {head: float(v) for head, v in zip(self.heads, row, strict=True)} for row in self.scores(texts)
        ]
