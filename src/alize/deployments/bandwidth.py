"""The memory-bandwidth bound of decoding: how fast one sequence could decode on this machine.

Decoding one token of a dense model reads every weight matrix once (batch 1: a matrix-vector
product per matrix), so ``tokens/s ≤ memory bandwidth ÷ bytes read per token``, whatever the
engine does; how close the measured decode comes to that bound says how much an engine could
still gain. Both sides are measured, not looked up:

* **bytes per token** (:func:`bytes_per_token`): the tensor bytes of the GGUF file, from its
  header, minus the token-embedding table when the model has a separate output matrix (decoding
  reads one row of the embeddings, and all of the output matrix); a model with tied embeddings
  (SmolLM2) reads the table whole, for the logits. The KV cache read per token is left out: at
  the short contexts of the decode measurement it is a few hundred KB against ~100 MB of weights.
* **memory bandwidth** (:func:`memory_bandwidth_gb_s`): ``threads`` threads each copying a
  buffer far larger than the caches with numpy (which releases the GIL), best of ``runs``;
  bytes read plus bytes written per second, the way STREAM's *copy* counts them.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alize.catalog.gguf_reader import read_header

MIB = 1024 * 1024


def bytes_per_token(path: str | Path) -> int:
    """Weight bytes one decoded token reads (see the module docstring)."""
    tensors = read_header(Path(path)).tensors
    total = sum(t.n_bytes for t in tensors)
    names = {t.name for t in tensors}
    if "output.weight" in names:
        total -= sum(t.n_bytes for t in tensors if t.name == "token_embd.weight")
    return total


def memory_bandwidth_gb_s(*, threads: int = 1, mib_per_thread: int = 128, runs: int = 5) -> float:
    """Copy bandwidth of this machine with ``threads`` threads, in GB/s (10⁹ bytes)."""
    import numpy as np

    n = mib_per_thread * MIB
    sources = [np.ones(n, dtype=np.uint8) for _ in range(threads)]
    targets = [np.empty_like(s) for s in sources]

    def copy(i: int) -> None:
        np.copyto(targets[i], sources[i])

    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, range(threads)))  # first touch: page faults are not bandwidth
        for _ in range(runs):
            started = time.perf_counter()
            list(pool.map(copy, range(threads)))
            best = min(best, time.perf_counter() - started)
    return round(2 * n * threads / best / 1e9, 2)


def bound_tokens_per_second(bandwidth_gb_s: float, bytes_per_token_: int) -> float:
    return round(bandwidth_gb_s * 1e9 / bytes_per_token_, 1) if bytes_per_token_ else 0.0
