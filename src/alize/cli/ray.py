"""``alize ray apps|delete``: Alizé's Serve applications on a Ray cluster, from a terminal.

A gateway killed outright leaves its deployments' Serve applications running (their replicas
hold the cluster's CPUs). The next ``alize serve --ray`` reuses those of its own deployments;
these commands show every application of Alizé's namespace and remove those no deployment
claims. They join the cluster as a Ray driver, like ``alize serve --ray``, so they work with no
gateway running (exit 3 when the cluster cannot be joined).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from alize.cli.serve import join_ray_cluster
from alize.cli.settings import load_settings

if TYPE_CHECKING:  # imported when a command runs (cli/settings.py says why)
    from alize.config import RaySettings

ray_app = typer.Typer(help="Alizé's Serve applications on a Ray cluster: list, delete.", no_args_is_help=True)

RayOpt = typer.Option(
    None, "--ray", metavar="ADDRESS|auto", help="The Ray cluster (env ALIZE_RAY__ADDRESS; default auto)."
)
NamesArg = typer.Argument(None, help="Applications (NAMESPACE.DEPLOYMENT) or deployment names.")
NamespaceOpt = typer.Option(None, "--namespace", help="Alizé's namespace on it (env ALIZE_RAY__NAMESPACE).")


def _settings(address: str | None, namespace: str | None) -> RaySettings:
    ray = load_settings().ray
    update: dict[str, object] = {"address": address or ray.address or "auto"}
    if namespace:
        update["namespace"] = namespace
    return ray.model_copy(update=update)


@ray_app.command("apps")
def apps(address: str | None = RayOpt, namespace: str | None = NamespaceOpt) -> None:
    """List the Serve applications of Alizé's namespace: status and replicas by state."""
    from alize.engines.ray_apps import list_apps

    settings = _settings(address, namespace)
    join_ray_cluster(settings, quiet=True)
    found = list_apps(settings.namespace)
    if not found:
        typer.echo(f"no Serve application in namespace {settings.namespace}")
        return
    typer.echo(f"{'APPLICATION':<40} {'DEPLOYMENT':<28} {'STATUS':<14} {'REPLICAS':<24} DEPLOYED")
    for app in found:
        replicas = ", ".join(f"{n} {state.lower()}" for state, n in sorted(app.replicas.items())) or "none"
        deployed = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(app.deployed_at)) if app.deployed_at else "-"
        )
        typer.echo(f"{app.name:<40} {app.deployment:<28} {app.status:<14} {replicas:<24} {deployed}")


@ray_app.command("delete")
def delete(
    names: list[str] | None = NamesArg,
    every: bool = typer.Option(False, "--all", help="Every application of the namespace."),
    address: str | None = RayOpt,
    namespace: str | None = NamespaceOpt,
) -> None:
    """Delete Serve applications of Alizé's namespace and stop their replicas. A gateway still
    serving one of them loses its replicas: stop it first (it deletes its own when stopped)."""
    from alize.engines.ray_apps import application_name, delete_app, list_apps

    if not names and not every:
        typer.secho("error: name the applications to delete, or --all", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    settings = _settings(address, namespace)
    join_ray_cluster(settings, quiet=True)
    present = {app.name for app in list_apps(settings.namespace)}
    prefix = application_name(settings.namespace, "")
    wanted = sorted(present) if every else [n if n.startswith(prefix) else prefix + n for n in names or ()]
    missing = [n for n in wanted if n not in present]
    if missing:
        typer.secho(f"error: no such Serve application: {', '.join(missing)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    for name in wanted:
        delete_app(name)
        typer.echo(f"deleted {name}")
