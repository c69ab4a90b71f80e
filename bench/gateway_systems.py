"""The gateways bench/gateway.py compares, each started as a subprocess in front of the same fake
upstream and set up as an operator would: a key, a rate limit and a budget, metering on.

* ``alize``: ``alize serve`` (SQLite ledger, in-process limiter: one machine's defaults), an
  admin key; the fake upstream as a remote card and a deployment with prices; a project with a
  monthly budget, RPM and TPM limits, and a key in it with its own RPM and TPM limits.
* ``alize-shared``: the same on PostgreSQL (a fresh schema) and Redis: the several-gateways setup.
* ``litellm``: LiteLLM's proxy from a pinned venv in bench/.cache (never a dependency of Alizé).
  Its virtual keys and per-key budgets need a database through prisma, whose engines download
  from the internet at first start, which this machine cannot reach; so it runs without one:
  the master key, a global ``max_budget`` with per-token prices (cost tracked per request),
  and ``rpm``/``tpm`` limits on the model deployment enforced by the router's
  ``usage-based-routing-v2`` (in memory, per process). What differs is written in the JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _common import CACHE_DIR, ManagedServer, free_port, log

LITELLM_VERSION = "1.77.7"  # released in 2025 (the 2026 releases include a hijacked one)
LITELLM_VENV = CACHE_DIR / "litellm-venv"
LOG_DIR = CACHE_DIR / "logs"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
MASTER_KEY = "sk-bench-master-0123456789abcdef"
#: limits high enough never to refuse the benchmark's load, but checked on every request
RPM, TPM = 10_000_000, 1_000_000_000
BUDGET_MICROS = 10**15
PRICE_PER_MILLION = 1_000_000  # one micro-unit per token


QUIET_UVICORN = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"default": {"class": "logging.StreamHandler"}},
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "WARNING"},
        "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": False},
    },
}


@dataclass
class Running:
    name: str
    host: str
    port: int
    path: str
    key: str
    model: str
    server: ManagedServer
    setup: dict[str, Any] = field(default_factory=dict)


def _admin(url: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.request(
        method,
        f"{url}/admin/api{path}",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=60,
    )
    if r.status_code not in (200, 201):
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
    data: dict[str, Any] = r.json()
    return data


@contextlib.contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL test database; the URL that uses it. Dropped afterwards."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    schema = f"alize_bench_{secrets.token_hex(4)}"
    engine = sa.create_engine(base.set(drivername="postgresql+psycopg"))
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def start_alize(
    name: str,
    upstream_port: int,
    data_dir: Path,
    extra_env: dict[str, str],
    *,
    limits: tuple[int, int] = (RPM, TPM),
    configure: bool = True,
    key: str = "",
) -> Running:
    """``alize serve``, configured (card, deployment, project ``limits`` = (rpm, tpm), key) unless
    ``configure`` is false: a second gateway on the same database, given the first one's ``key``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env.update(
        {
            "ALIZE_HOST": "127.0.0.1",
            "ALIZE_PORT": str(port),
            "ALIZE_DATA_DIR": str(data_dir),
            "ALIZE_ADMIN_KEY": ADMIN_KEY,
            "ALIZE_LOAD_ON_START": "false",
            "ALIZE_CHAT__ENABLED": "false",
            "ALIZE_LOG_LEVEL": "warning",
            "ALIZE_ENGINE__PARALLEL": "256",
            "ALIZE_LIMITS__QUEUE_MAX": "4096",
            # steady state: the start-up prewarm imports PyTorch for the embeddings model in a
            # thread for about 10 s, and its GIL time showed up in the first measured requests
            "ALIZE_ENGINE__PREWARM": "false",
            **extra_env,
        }
    )
    server = ManagedServer(
        name, [sys.executable, "-m", "alize.cli.main", "serve"], env, LOG_DIR / f"{name}.log"
    )
    server.start()
    url = f"http://127.0.0.1:{port}"
    server.wait_ready(url + "/health", 120)
    if not configure:
        return Running(name, "127.0.0.1", port, "/v1/chat/completions", key, "fake", server, {})
    card = {
        "id": "fake",
        "display_name": "fake upstream",
        "publisher": "bench",
        "license": "apache-2.0",
        "open_weights": False,
        "tasks": ["chat"],
        "context_length": 8192,
        "has_chat_template": True,
        "source": {
            "kind": "remote",
            "base_url": f"http://127.0.0.1:{upstream_port}/v1",
            "upstream_model": "fake",
        },
    }
    _admin(url, "POST", "/models", {"card": card})
    prices = {"price_input_per_million": PRICE_PER_MILLION, "price_output_per_million": PRICE_PER_MILLION}
    _admin(url, "POST", "/deployments", {"name": "fake", "model": "fake", "parallel": 256, **prices})
    rpm, tpm = limits
    project = _admin(
        url,
        "POST",
        "/projects",
        {"name": "bench", "rpm": rpm, "tpm": tpm, "monthly_budget_micros": BUDGET_MICROS},
    )
    body = {"name": "bench", "project_id": project["id"], "rpm": RPM, "tpm": TPM}
    issued = _admin(url, "POST", "/keys", body)
    setup = {
        "key": "project API key (salted hash in the database), key and project RPM + TPM limits",
        "budget_micros": BUDGET_MICROS,
        "metering": "one ledger row per request",
        "database": "PostgreSQL" if "ALIZE_DATABASE_URL" in extra_env else "SQLite (the default)",
        "limiter": "Redis" if "ALIZE_REDIS_URL" in extra_env else "in-process (the default)",
        "project_id": project["id"],
    }
    return Running(name, "127.0.0.1", port, "/v1/chat/completions", issued["key"], "fake", server, setup)


def ledger_rows(running: Running) -> int | None:
    """Requests on the ledger of the benchmark's project (Alizé only)."""
    project_id = running.setup.get("project_id")
    if not project_id:
        return None
    r = httpx.get(
        f"http://{running.host}:{running.port}/admin/api/usage",
        params={"group_by": "project", "project_id": project_id},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=60,
    )
    data = r.json().get("data") or []
    return int(data[0]["requests"]) if data else 0


def ensure_litellm(version: str = LITELLM_VERSION) -> Path:
    """The proxy's python: the venv in bench/.cache, created and pinned on first use."""
    python = LITELLM_VENV / "bin" / "python"
    check = [
        str(python),
        "-c",
        "import litellm.proxy.proxy_server, importlib.metadata as m; print(m.version('litellm'))",
    ]
    if python.exists():
        out = subprocess.run(check, capture_output=True, text=True, timeout=300, check=False)
        if out.returncode == 0 and out.stdout.strip() == version:
            return python
    if not python.exists():
        log(f"litellm: creating {LITELLM_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=600)
    log(f"litellm: installing litellm[proxy]=={version} (minutes)")
    pip = [str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={version}"]
    subprocess.run(pip, check=True, timeout=3600)
    return python


def litellm_config(upstream_port: int, tpm: int = TPM) -> dict[str, Any]:
    per_token = PRICE_PER_MILLION / 10**6 / 10**6  # the same price as Alizé's, in dollars
    return {
        "model_list": [
            {
                "model_name": "fake",
                "litellm_params": {
                    "model": "openai/fake",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "sk-fake-upstream",
                    "rpm": RPM,
                    "tpm": tpm,
                    "input_cost_per_token": per_token,
                    "output_cost_per_token": per_token,
                },
            }
        ],
        "router_settings": {"routing_strategy": "usage-based-routing-v2"},
        "litellm_settings": {
            "max_budget": BUDGET_MICROS / 10**6,
            "budget_duration": "30d",
            "telemetry": False,
        },
        "general_settings": {"master_key": MASTER_KEY},
    }


def start_litellm(
    python: Path, upstream_port: int, name: str = "litellm", config: dict[str, Any] | None = None
) -> Running:
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    path = LOG_DIR / f"{name}-config.yaml"
    config = config or litellm_config(upstream_port)
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_"))}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "NO_DOCS": "True"})
    cmd = [str(python.parent / "litellm"), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    # uvicorn's access log off, as Alizé's is: one log line per request is not what is compared
    log_config = LOG_DIR / f"{name}-logging.json"
    log_config.write_text(json.dumps(QUIET_UVICORN))
    cmd += ["--num_workers", "1", "--log_config", str(log_config)]
    server = ManagedServer(name, cmd, env, LOG_DIR / f"{name}.log")
    server.start()
    server.wait_ready(f"http://127.0.0.1:{port}/health/liveliness", 300)
    setup = {
        "version": LITELLM_VERSION,
        "key": "the master key (virtual keys need LiteLLM's database; prisma cannot fetch engines offline)",
        "budget": "litellm_settings.max_budget (global, in memory), per-token prices on the model",
        "rate_limit": "rpm/tpm on the model deployment, router usage-based-routing-v2 (in memory, per pod)",
        "metering": "cost computed per request in memory; no spend log without its database",
        "workers": 1,
        "access_log": "off (as Alizé's)",
    }
    return Running(name, "127.0.0.1", port, "/v1/chat/completions", MASTER_KEY, "fake", server, setup)
