"""``alize serve``: the API server and chat page, with the embedded default deployment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from alize.cli.settings import load_settings
from alize.observability.logs import configure_logging

if TYPE_CHECKING:  # imported when a command runs (cli/settings.py says why)
    from alize.config import RaySettings


def serve(
    host: str | None = typer.Option(None, help="Address to bind (default 127.0.0.1; env ALIZE_HOST)."),
    port: int | None = typer.Option(None, help="Port to bind (default 8000; env ALIZE_PORT)."),
    log_level: str | None = typer.Option(None, help="Log level (env ALIZE_LOG_LEVEL)."),
    ray: str | None = typer.Option(
        None,
        "--ray",
        metavar="ADDRESS|auto",
        help="Run the llama.cpp deployments' replicas on this Ray cluster (env ALIZE_RAY__ADDRESS).",
    ),
) -> None:
    """Start the server (OpenAI-, Mistral- and Azure-compatible API) with the default model."""
    import uvicorn

    from alize.api.app import create_app
    from alize.gateway.tenancy import is_loopback_host

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if log_level is not None:
        overrides["log_level"] = log_level
    settings = load_settings(**overrides)
    if ray is not None:
        settings = settings.model_copy(update={"ray": settings.ray.model_copy(update={"address": ray})})
    configure_logging(settings.log_level, json_lines=settings.observability.json_logs)
    if settings.ray.address:
        join_ray_cluster(settings.ray)
    if not is_loopback_host(settings.host):
        typer.echo(
            f"warning: binding {settings.host}: anyone who reaches it can call the API until keys exist",
            err=True,
        )
    typer.echo(f"Alizé on http://{settings.host}:{settings.port} (model {settings.default_model})")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's own lines go through the same (JSON, redacting) handler
        access_log=False,
        timeout_graceful_shutdown=5,
    )


#: ``alize serve`` exits with this when ``--ray`` names a cluster it cannot join
EXIT_NO_CLUSTER = 3


def join_ray_cluster(settings: RaySettings, *, quiet: bool = False) -> None:
    """Join the Ray cluster before serving, or exit 3 saying why (not installed, nothing
    answering at the address, refused): a gateway whose replicas cannot start never serves.
    Then list the Serve applications of Alizé's namespace already running (left by a gateway
    killed outright): each is redeployed in place when its deployment loads."""
    from alize.engines.ray import RayUnavailableError, connect
    from alize.engines.ray_apps import list_apps

    address = settings.address or "auto"
    try:
        connect(address, namespace=settings.namespace, timeout_s=settings.connect_timeout_s)
    except RayUnavailableError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_NO_CLUSTER) from None
    if quiet:
        return
    typer.echo(f"Ray cluster {address}: llama.cpp replicas run as Ray Serve deployments")
    running = list_apps(settings.namespace)
    if running:
        names = ", ".join(f"{app.name} ({app.status}, {app.running} replicas)" for app in running)
        typer.echo(
            f"Serve applications already running in namespace {settings.namespace}: {names}; each is "
            "reused when its deployment loads (`alize ray apps` lists them, `alize ray delete NAME` "
            "removes one no deployment uses)"
        )
