"""What ``alize models tune`` measured on this machine, as card data (``ModelCard.tuning``).

A tuning is never typed in: the tuner (:mod:`alize.deployments.tuning`) tries the engine settings
that move llama.cpp's speed on a CPU (threads, batch sizes, flash attention, the KV cache type,
slots) and weight formats requantised from the packaged file, measures each, and keeps a change
only when it is faster *and* its quality holds: the perplexity of a shipped English text within
:data:`PERPLEXITY_TOLERANCE` of the original weights' (lower is better, so any drop is kept).
Deployments of the model then start with :class:`TunedSettings` and the kept variant's file
(unless the server's ``ENGINE__USE_TUNING`` is off). Beside the speed, the tuner reports the
memory-bandwidth bound of decoding: bytes read per token ÷ the measured copy bandwidth, the
fastest one sequence can decode on this machine whatever the engine does.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alize.bounds import INT64_MAX

#: a variant (or a KV cache type) is kept only if its perplexity is at most this much higher
PERPLEXITY_TOLERANCE = 0.01

KvCacheType = Literal["f16", "bf16", "q8_0", "q4_0"]
FlashAttn = Literal["auto", "on", "off"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _finite(cls, v: object) -> object:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("measured figures must be finite numbers")
        return v


class TunedSettings(_Data):
    """The engine settings a deployment of the model starts with."""

    threads: int = Field(ge=1, le=1024)
    batch_size: int = Field(ge=32, le=8192)
    ubatch_size: int | None = Field(default=None, ge=32, le=8192)
    flash_attn: FlashAttn = "auto"
    kv_cache_type: KvCacheType = "f16"
    #: slots past which more concurrent streams stopped adding throughput (a recommendation:
    #: a deployment's own ``parallel`` is its capacity promise and is never changed by tuning)
    recommended_parallel: int | None = Field(default=None, ge=1, le=256)


class Trial(_Data):
    """One setting tried, on top of the best settings found before it."""

    setting: str = Field(max_length=40, description="threads, batch_size, flash_attn, kv_cache_type...")
    value: str = Field(max_length=40)
    decode_tokens_per_second: float = Field(ge=0)
    prefill_tokens_per_second: float = Field(ge=0)
    #: aggregate tokens/s of ``streams`` concurrent sequences (the slots trial only)
    throughput_tokens_per_second: float | None = Field(default=None, ge=0)
    perplexity: float | None = Field(default=None, gt=0)
    kept: bool
    note: str = Field(default="", max_length=300)


class Variant(_Data):
    """The model's weights in one format, measured with the tuned settings."""

    format: str = Field(max_length=20, description="Q4_0, Q8_0, BF16, or the packaged file's own")
    original: bool = Field(description="the packaged weights themselves")
    path: str | None = Field(default=None, max_length=4096, description="the requantised file")
    size_bytes: int = Field(ge=0, le=INT64_MAX)
    decode_tokens_per_second: float = Field(ge=0)
    prefill_tokens_per_second: float = Field(ge=0)
    perplexity: float = Field(gt=0)
    perplexity_change: float = Field(description="relative to the original weights (+0.004 = 0.4 % worse)")
    bytes_per_token: int = Field(ge=0, le=INT64_MAX, description="weights read to decode one token")
    bandwidth_bound_tokens_per_second: float | None = Field(default=None, ge=0)
    kept: bool
    note: str = Field(default="", max_length=300)


class Bandwidth(_Data):
    """Single-stream decode beside the memory-bandwidth bound of this machine."""

    memory_bandwidth_gb_s: float = Field(gt=0, description="measured: numpy copy, read + write bytes / s")
    bytes_per_token: int = Field(
        ge=0, le=INT64_MAX, description="weight bytes a decoded token reads (chosen weights)"
    )
    bound_tokens_per_second: float = Field(ge=0, description="memory bandwidth / bytes per token")
    decode_tokens_per_second: float = Field(ge=0, description="measured, one sequence, tuned settings")
    fraction_of_bound: float = Field(ge=0, description="decode / bound")


class Tuning(_Data):
    settings: TunedSettings
    #: the chosen weights: None = the packaged file
    variant_format: str | None = Field(default=None, max_length=20)
    variant_path: str | None = Field(default=None, max_length=4096)
    baseline_decode_tokens_per_second: float = Field(ge=0, description="default settings, packaged weights")
    decode_tokens_per_second: float = Field(ge=0, description="tuned settings and weights")
    prefill_tokens_per_second: float = Field(ge=0)
    cold_start_s: float | None = Field(default=None, ge=0, description="engine start with the tuned settings")
    trials: tuple[Trial, ...] = Field(default=(), max_length=64)
    variants: tuple[Variant, ...] = Field(default=(), max_length=16)
    bandwidth: Bandwidth | None = None
    perplexity_text: str = Field(max_length=200, description="the shipped text perplexity is measured on")
    perplexity_tokens: int = Field(ge=1, le=1_000_000)
    machine: str = Field(max_length=300)
    cpu_flags: tuple[str, ...] = Field(default=(), max_length=64)
    measured_at: str = Field(max_length=40)
    duration_s: float = Field(ge=0)


def tuning_text(tuning: Tuning) -> str:
    """One line for the catalog page: the speed-up, the settings, each variant's speed."""
    s = tuning.settings
    base = tuning.baseline_decode_tokens_per_second
    gain = f" ({tuning.decode_tokens_per_second / base:.2f}x)" if base else ""
    weights = tuning.variant_format or "packaged weights"
    parts = [
        f"decode {tuning.decode_tokens_per_second:,.0f} tok/s{gain} with {weights}, {s.threads} threads, "
        f"batch {s.batch_size}, flash attention {s.flash_attn}, KV {s.kv_cache_type}"
    ]
    if tuning.bandwidth is not None:
        b = tuning.bandwidth
        parts.append(
            f"{b.fraction_of_bound:.0%} of the memory-bandwidth bound "
            f"({b.bound_tokens_per_second:,.0f} tok/s at {b.memory_bandwidth_gb_s:.1f} GB/s)"
        )
    for v in tuning.variants:
        verdict = "kept" if v.kept else "dropped"
        parts.append(
            f"{v.format}{' (packaged)' if v.original else ''}: {v.decode_tokens_per_second:,.0f} tok/s, "
            f"perplexity {v.perplexity:.3f} ({v.perplexity_change:+.1%}), {verdict}"
        )
    if tuning.cold_start_s is not None:
        parts.append(f"engine start {tuning.cold_start_s:.2f} s")
    return "; ".join(parts) + f" ({tuning.machine}; {tuning.measured_at[:10]})"
