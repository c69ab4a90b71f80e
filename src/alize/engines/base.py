"""The one narrow interface every engine implements.

An engine turns a :class:`~alize.domain.GenerationRequest` into an async stream of
:class:`~alize.domain.Delta` and knows nothing of HTTP, keys, prices or policies. The gateway
owns admission (slots, queueing), metering and safety; deployments own when an engine is
started and stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from alize.domain import Delta, Embeddings, EngineInfo, GenerationRequest
from alize.errors import EngineUnavailableError, UnsupportedFeatureError

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class LoraAdapter:
    """A LoRA adapter loaded beside the base model; requests choose it by ``name``."""

    name: str
    path: Path


@dataclass(frozen=True, slots=True)
class ReplicaScaling:
    """How many replicas an engine that places its own (Ray Serve) runs: ``replicas`` fixed, or
    autoscaled between ``min_replicas`` and ``max_replicas`` on ``target_ongoing_requests``
    sequences per replica. Changeable while the deployment serves (:meth:`Engine.rescale`)."""

    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas is not None

    @property
    def most(self) -> int:
        """The most replicas that may run at once (what the fair queue admits for)."""
        return max(self.replicas, self.max_replicas or 0)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What an engine needs to load one model; built by the deployment manager."""

    kind: str
    model_path: Path | None = None
    parallel: int = 4
    ctx_per_slot: int = 4096
    threads: int = 2
    batch_size: int = 512
    #: physical batch (llama.cpp ``n_ubatch``); None = llama.cpp's default (512, at most batch_size)
    ubatch_size: int | None = None
    cache_ram_mib: int = 256
    kv_unified: bool = False
    #: KV cache element type (llama.cpp names: f16, bf16, q8_0, q4_0); f16 is llama.cpp's default
    kv_cache_type: str = "f16"
    #: flash attention: "auto" (llama.cpp decides), "on" or "off"
    flash_attn: str = "auto"
    load_timeout_s: float = 300.0
    request_timeout_s: float = 600.0
    restart_backoff_s: float = 1.0
    #: engine-specific options (e.g. an upstream URL for a remote engine)
    options: dict[str, str] = field(default_factory=dict)
    #: LoRA adapters loaded with the model (llama.cpp); a request names one, or none for the base
    adapters: tuple[LoraAdapter, ...] = ()
    #: for an engine that runs its own replicas (Ray Serve): how many; ``None`` for the others,
    #: which the deployment replicates as separate engines
    scaling: ReplicaScaling | None = None


def loaded(value: _T | None) -> _T:
    """``value`` once the model is loaded; before that (or after a stop) a 503 the client may
    retry: the engines' ``info`` and their loaded state read through this one rule."""
    if value is None:
        raise EngineUnavailableError("the model is not loaded", retry_after=2)
    return value


def refuse_adapter(request: GenerationRequest, engine: str) -> None:
    """For engines that serve no LoRA adapters: a request for one is a clear 400, not the base."""
    if request.adapter is not None:
        raise UnsupportedFeatureError(
            f"the {engine} engine serves no LoRA adapters; fine-tuned models run on llama.cpp", param="model"
        )


class Engine(ABC):
    """A loaded (or loadable) model. Implementations must be safe to call concurrently."""

    @abstractmethod
    async def start(self) -> EngineInfo:
        """Load the model; returns what it can do. Idempotent."""

    @abstractmethod
    async def stop(self) -> None:
        """Free every resource (process, memory). Idempotent."""

    @property
    @abstractmethod
    def info(self) -> EngineInfo:
        """What the loaded model can do; only valid after :meth:`start`."""

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        """Stream the output; closing the iterator early cancels generation at once."""

    @abstractmethod
    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens the prompt will take after the chat template is applied."""

    @abstractmethod
    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """One vector per text; engines without embeddings raise UnsupportedFeatureError."""

    async def check(self) -> None:
        """Raise when the engine cannot serve now (the worker is gone, the upstream unreachable):
        the replica set's health checks take it out of routing until this passes again. The
        default only asks that the model be loaded."""
        _ = self.info

    async def rescale(self, scaling: ReplicaScaling) -> None:
        """Change the replica count or autoscaling bounds while serving (engines that place
        their own replicas); the others have a fixed shape."""
        raise UnsupportedFeatureError(
            "this engine's replicas are set by the deployment's `replicas`", param="max_replicas"
        )

    async def prewarm(self) -> None:
        """Make a later :meth:`start` cheaper without loading the model or holding its memory
        (import the framework and the model's code); by default there is nothing to do."""
        return None

    async def metrics_text(self) -> str | None:
        """The engine's own Prometheus exposition (llama.cpp's ``/metrics``), if it has one and
        is loaded; ``None`` otherwise. The gateway's ``/metrics`` merges it under a label."""
        return None
