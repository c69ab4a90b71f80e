"""``alize finetune create|list|status|events|cancel``: fine-tuning jobs from a terminal.

The commands talk HTTP to the server's ``/v1/fine_tuning/jobs`` (``--url`` / ``ALIZE_URL``,
``--api-key`` / ``ALIZE_API_KEY``: a project key, since jobs belong to projects), like any
client. ``--follow`` draws a live progress line from the job and its newest metrics event:
step, training loss, tokens/s and the estimated time left, until the job ends.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer

from alize.cli.models import DEFAULT_URL, _call, _echo_json, _fail

finetune_app = typer.Typer(help="Fine-tuning jobs: create, follow, list, cancel.", no_args_is_help=True)

UrlOpt = typer.Option(DEFAULT_URL, "--url", envvar="ALIZE_URL", help="Server URL.")
KeyOpt = typer.Option(None, "--api-key", envvar="ALIZE_API_KEY", help="API key of the project, if any.")
JsonOpt = typer.Option(False, "--json", help="Print the server's JSON.")
FollowOpt = typer.Option(False, "--follow", "-f", help="Show a live progress bar until the job ends.")
_FINAL = {"succeeded", "failed", "cancelled"}
_BAR = 30


def _upload(url: str, api_key: str | None, path: Path) -> str:
    """A local file goes up through ``/v1/files`` first (purpose ``fine-tune``)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with path.open("rb") as handle:
            response = httpx.post(
                f"{url}/v1/files",
                headers=headers,
                data={"purpose": "fine-tune"},
                files={"file": (path.name, handle, "application/jsonl")},
                timeout=httpx.Timeout(600.0, connect=5.0),
            )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the Alizé server at {url} ({type(exc).__name__})")
    if response.status_code >= 400:
        _fail(f"uploading {path}: {response.status_code}: {response.text[:500]}")
    return str(response.json()["id"])


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(job: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    """``[#####.....]  12/40  loss 1.2345  410 tok/s  ETA 0:00:12  running``"""
    total = job.get("total_steps") or 0
    step = int(job.get("step") or 0)
    filled = int(_BAR * step / total) if total else 0
    parts = [f"[{'#' * filled}{'.' * (_BAR - filled)}]", f"{step:>4}/{total or '?'}"]
    if metrics:
        parts.append(f"loss {metrics.get('train_loss', 0):.4f}")
        if metrics.get("valid_loss") is not None:
            parts.append(f"valid {metrics['valid_loss']:.4f}")
        parts.append(f"{metrics.get('tokens_per_second', 0):,.0f} tok/s")
        if job.get("status") == "running":
            parts.append(f"ETA {_clock(float(metrics.get('eta_s') or 0))}")
    parts.append(str(job.get("status")))
    return "  ".join(parts)


def _latest_metrics(url: str, api_key: str | None, job_id: str) -> dict[str, Any] | None:
    events = _call(url, api_key, "GET", f"/v1/fine_tuning/jobs/{job_id}/events?limit=20")["data"]
    for event in events:  # newest first
        if event.get("type") == "metrics":
            data: dict[str, Any] = event["data"]
            return data
    return None


def _follow(url: str, api_key: str | None, job_id: str, interval_s: float = 1.0) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = _call(url, api_key, "GET", f"/v1/fine_tuning/jobs/{job_id}")
        line = progress_line(job, _latest_metrics(url, api_key, job_id))
        sys.stderr.write("\r" + line.ljust(100) if sys.stderr.isatty() else line + "\n")
        sys.stderr.flush()
        if job.get("status") in _FINAL:
            sys.stderr.write("\n" if sys.stderr.isatty() else "")
            return job
        time.sleep(interval_s)


def _summary(job: dict[str, Any]) -> None:
    typer.echo(f"{job['id']}  {job['status']}  base {job['model']}")
    if job.get("fine_tuned_model"):
        typer.echo(f"model: {job['fine_tuned_model']}  ({job.get('trained_tokens')} trained tokens)")
    if job.get("error"):
        typer.secho(f"error: {job['error'].get('message')}", fg=typer.colors.RED)


@finetune_app.command("create")
def create(
    model: str = typer.Argument(..., help="Base model (a catalog id deployed on llama.cpp)."),
    training_file: str = typer.Argument(..., help="A file id, or a local JSONL file to upload."),
    validation_file: str | None = typer.Option(None, help="A file id (or local file) held out."),
    suffix: str | None = typer.Option(None, help="Part of the new model's name: ft:<base>:<suffix>:<job>."),
    epochs: int | None = typer.Option(None, help="Passes over the training data."),
    steps: int | None = typer.Option(None, help="Optimizer steps (overrides epochs)."),
    batch_size: int | None = typer.Option(None, help="Sequences per step."),
    learning_rate_multiplier: float | None = typer.Option(None, help="Scales the base LoRA learning rate."),
    seed: int | None = typer.Option(None, help="Seed: the same seed and data give the same adapter."),
    follow: bool = FollowOpt,
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a fine-tuning job (OpenAI's shape)."""

    def file_id(value: str) -> str:
        return _upload(url, api_key, Path(value)) if Path(value).is_file() else value

    hyper: dict[str, Any] = {
        k: v
        for k, v in {
            "n_epochs": epochs,
            "training_steps": steps,
            "batch_size": batch_size,
            "learning_rate_multiplier": learning_rate_multiplier,
        }.items()
        if v is not None
    }
    body: dict[str, Any] = {
        "model": model,
        "training_file": file_id(training_file),
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
    }
    if validation_file:
        body["validation_file"] = file_id(validation_file)
    if suffix:
        body["suffix"] = suffix
    if seed is not None:
        body["seed"] = seed
    job = _call(url, api_key, "POST", "/v1/fine_tuning/jobs", body)
    if follow:
        job = _follow(url, api_key, job["id"])
    _echo_json(job) if as_json else _summary(job)
    if follow and job["status"] != "succeeded":
        raise typer.Exit(1)


@finetune_app.command("list")
def list_jobs(
    limit: int = typer.Option(20, min=1, max=100),
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List the project's fine-tuning jobs, newest first."""
    data = _call(url, api_key, "GET", f"/v1/fine_tuning/jobs?limit={limit}")["data"]
    if as_json:
        _echo_json(data)
        return
    typer.echo(f"{'ID':32} {'STATUS':17} {'BASE':24} {'STEP':>9}  MODEL")
    for job in data:
        step = f"{job.get('step') or 0}/{job.get('total_steps') or '?'}"
        tuned = job.get("fine_tuned_model") or "-"
        typer.echo(f"{job['id']:32} {job['status']:17} {job['model']:24} {step:>9}  {tuned}")


@finetune_app.command("status")
def status(
    job_id: str,
    follow: bool = FollowOpt,
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show a job (``--follow``: a live progress bar until it ends)."""
    job = (
        _follow(url, api_key, job_id)
        if follow
        else _call(url, api_key, "GET", f"/v1/fine_tuning/jobs/{job_id}")
    )
    if as_json:
        _echo_json(job)
        return
    _summary(job)
    if not follow:
        typer.echo(progress_line(job, _latest_metrics(url, api_key, job_id)))


@finetune_app.command("events")
def events(
    job_id: str,
    limit: int = typer.Option(50, min=1, max=1000),
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """A job's events, oldest first (messages and per-step metrics)."""
    data = _call(url, api_key, "GET", f"/v1/fine_tuning/jobs/{job_id}/events?limit={limit}")["data"]
    for event in reversed(data):
        moment = time.strftime("%H:%M:%S", time.localtime(event["created_at"]))
        typer.echo(f"{moment}  {event['level']:5}  {event['message']}")


@finetune_app.command("cancel")
def cancel(job_id: str, url: str = UrlOpt, api_key: str | None = KeyOpt) -> None:
    """Cancel a job (a running one stops between two training steps)."""
    _summary(_call(url, api_key, "POST", f"/v1/fine_tuning/jobs/{job_id}/cancel"))


finetune_app.command("show", help="Show a job (the same as `status`).")(status)
