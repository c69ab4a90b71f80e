"""``alize projects|keys|usage|audit``: tenancy administration from a terminal.

These commands open the database named by the settings directly (the same ``ALIZE_DATABASE_URL``
/ ``ALIZE_DATA_DIR`` / ``ALIZE_SECRET_KEY`` the server reads), so they work before any server
runs: ``alize keys create ops --admin`` on a fresh install is how the first admin key is made.
A running server sees new keys at once and revocations within its key-cache TTL (5 s).
Every change is written to the audit log with the actor ``cli``. A new key's secret is the only
thing printed on stdout, so ``KEY=$(alize keys create ci)`` captures it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypeVar

import typer

from alize.cli.settings import load_settings, open_configured_database
from alize.errors import AlizeError
from alize.gateway.limits import LimitSpec, MemoryRateLimiter

if TYPE_CHECKING:  # imported when a command runs (cli/settings.py says why)
    from alize.gateway.keys import KeyInfo
    from alize.gateway.metering import UsageAggregate
    from alize.gateway.projects import ProjectInfo
    from alize.gateway.tenancy import Tenancy

T = TypeVar("T")
ACTOR = "cli"
GroupBy = Literal["day", "deployment", "model", "key", "project"]

projects_app = typer.Typer(help="Projects (tenants): budgets and limits.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: issue, list, revoke, rotate.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


def _run(work: Callable[[Tenancy], Awaitable[T]]) -> T:
    """Open the database, run ``work``, close; typed errors become a message and exit code 1."""

    from alize.gateway.tenancy import Tenancy

    async def main() -> T:
        settings = load_settings()
        db = await open_configured_database(settings)
        tenancy = Tenancy.build(settings, db, limiter=MemoryRateLimiter())
        try:
            return await work(tenancy)
        finally:
            await tenancy.aclose()
            await db.close()

    try:
        return asyncio.run(main())
    except AlizeError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _limit(text: str | None, current: int | None, name: str) -> int | None:
    """``None`` (option not given) keeps ``current``; ``none``/``unlimited`` clears it."""
    if text is None:
        return current
    if text.lower() in ("none", "unlimited", "null", ""):
        return None
    try:
        value = int(text)
    except ValueError:
        raise typer.BadParameter(f"{name} must be a whole number or 'none'") from None
    if value < 0:
        raise typer.BadParameter(f"{name} must be >= 0")
    return value


async def _project(tenancy: Tenancy, ref: str | None) -> ProjectInfo:
    """A project by id or name; no reference = the default project (created if missing)."""
    if ref is None:
        return await tenancy.projects.get(await tenancy.default_project_id())
    by_name = await tenancy.projects.get_by_name(ref)
    return by_name if by_name is not None else await tenancy.projects.get(ref)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _limits_text(limits: LimitSpec) -> tuple[object, object, object]:
    return (limits.rpm or "-", limits.tpm or "-", limits.concurrency or "-")


# -- projects -----------------------------------------------------------------------------------

RpmOpt = typer.Option(None, "--rpm", help="Requests per minute, or 'none'.")
TpmOpt = typer.Option(None, "--tpm", help="Tokens per minute, or 'none'.")
ConcOpt = typer.Option(None, "--concurrency", help="Concurrent requests, or 'none'.")
BudgetOpt = typer.Option(None, "--budget-micros", help="Monthly budget in micro-units, or 'none'.")


@projects_app.command("create")
def projects_create(
    name: str = typer.Argument(..., help="Unique project name."),
    budget_micros: str | None = BudgetOpt,
    currency: str = typer.Option("USD", help="Currency of the budget (3 letters)."),
    rpm: str | None = RpmOpt,
    tpm: str | None = TpmOpt,
    concurrency: str | None = ConcOpt,
) -> None:
    """Create a project."""
    limits = LimitSpec(_limit(rpm, None, "rpm"), _limit(tpm, None, "tpm"), _limit(concurrency, None, "conc"))

    async def work(t: Tenancy) -> ProjectInfo:
        project = await t.projects.create(
            name,
            monthly_budget_micros=_limit(budget_micros, None, "budget"),
            currency=currency.upper(),
            limits=limits,
        )
        await t.audit.append(ACTOR, "project.create", project.id, {"name": name})
        return project

    project = _run(work)
    typer.echo(project.id)


@projects_app.command("list")
def projects_list() -> None:
    """List projects with their budget and limits."""
    projects = _run(lambda t: t.projects.list())
    _table(
        ("ID", "NAME", "BUDGET_MICROS", "CURRENCY", "RPM", "TPM", "CONCURRENCY"),
        [
            (p.id, p.name, p.monthly_budget_micros or "-", p.currency, *_limits_text(p.limits))
            for p in projects
        ],
    )


@projects_app.command("update")
def projects_update(
    project: str = typer.Argument(..., help="Project id or name."),
    budget_micros: str | None = BudgetOpt,
    rpm: str | None = RpmOpt,
    tpm: str | None = TpmOpt,
    concurrency: str | None = ConcOpt,
) -> None:
    """Change a project's budget or limits (options left out keep their value)."""

    async def work(t: Tenancy) -> ProjectInfo:
        current = await _project(t, project)
        old = current.limits
        updated = await t.projects.update(
            current.id,
            monthly_budget_micros=_limit(budget_micros, current.monthly_budget_micros, "budget"),
            limits=LimitSpec(
                _limit(rpm, old.rpm, "rpm"),
                _limit(tpm, old.tpm, "tpm"),
                _limit(concurrency, old.concurrency, "concurrency"),
            ),
        )
        await t.audit.append(
            ACTOR,
            "project.update",
            current.id,
            {
                "monthly_budget_micros": updated.monthly_budget_micros,
                "rpm": updated.limits.rpm,
                "tpm": updated.limits.tpm,
                "concurrency": updated.limits.concurrency,
            },
        )
        return updated

    updated = _run(work)
    typer.echo(f"{updated.id} updated", err=True)


# -- keys ---------------------------------------------------------------------------------------


DeploymentOpt = typer.Option(
    None, "--deployment", help="Allow only this deployment (repeatable); default all."
)


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="A label for the key (e.g. the service using it)."),
    project: str | None = typer.Option(None, help="Project id or name (default: the default project)."),
    admin: bool = typer.Option(False, "--admin", help="Admin scope (administers the platform/project)."),
    deployment: list[str] | None = DeploymentOpt,
    rpm: str | None = RpmOpt,
    tpm: str | None = TpmOpt,
    concurrency: str | None = ConcOpt,
    expires_in_days: int | None = typer.Option(None, min=1, help="Expire after this many days."),
) -> None:
    """Issue a key. Its secret is printed once, on stdout; it cannot be shown again."""
    limits = LimitSpec(_limit(rpm, None, "rpm"), _limit(tpm, None, "tpm"), _limit(concurrency, None, "conc"))
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None

    async def work(t: Tenancy) -> tuple[KeyInfo, str]:
        owner = await _project(t, project)
        created = await t.keys.create(
            owner.id,
            name,
            scopes=("admin", "inference") if admin else ("inference",),
            allowed_deployments=deployment or None,
            limits=limits,
            expires_at=expires,
        )
        await t.audit.append(
            ACTOR,
            "key.create",
            created.info.id,
            {"project_id": owner.id, "prefix": created.info.prefix, "scopes": sorted(created.info.scopes)},
        )
        return created.info, created.plaintext

    info, plaintext = _run(work)
    typer.echo(f"created {info.id} ({info.prefix}) in {info.project_id}; store the key now:", err=True)
    typer.echo(plaintext)


@keys_app.command("list")
def keys_list(project: str | None = typer.Option(None, help="Only this project (id or name).")) -> None:
    """List keys (prefixes only; secrets are never stored)."""

    async def work(t: Tenancy) -> list[KeyInfo]:
        project_id = (await _project(t, project)).id if project is not None else None
        return await t.keys.list(project_id)

    keys = _run(work)
    _table(
        ("ID", "PROJECT", "NAME", "PREFIX", "SCOPES", "STATE", "LAST_USED"),
        [
            (
                k.id,
                k.project_id,
                k.name,
                k.prefix,
                ",".join(sorted(k.scopes)),
                "revoked" if k.revoked_at else "active",
                k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "-",
            )
            for k in keys
        ],
    )


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (key_...).")) -> None:
    """Revoke a key."""

    async def work(t: Tenancy) -> KeyInfo:
        info = await t.keys.revoke(key_id)
        await t.audit.append(ACTOR, "key.revoke", key_id, {"project_id": info.project_id})
        return info

    _run(work)
    typer.echo(f"{key_id} revoked", err=True)


@keys_app.command("rotate")
def keys_rotate(key_id: str = typer.Argument(..., help="The key's id (key_...).")) -> None:
    """Replace a key by a new secret (same name, scopes and limits); the old one stops working."""

    async def work(t: Tenancy) -> tuple[KeyInfo, str]:
        created = await t.keys.rotate(key_id)
        details = {"project_id": created.info.project_id, "new_key_id": created.info.id}
        await t.audit.append(ACTOR, "key.rotate", key_id, details)
        return created.info, created.plaintext

    info, plaintext = _run(work)
    typer.echo(f"{key_id} replaced by {info.id} ({info.prefix}); store the key now:", err=True)
    typer.echo(plaintext)


# -- usage and audit ----------------------------------------------------------------------------


def usage(
    group_by: str = typer.Option("day", help="day, deployment, model, key or project."),
    project: str | None = typer.Option(None, help="Only this project (id or name); default all."),
    days: int = typer.Option(30, min=1, help="How many days back from now."),
) -> None:
    """Print usage totals as a table."""
    if group_by not in ("day", "deployment", "model", "key", "project"):
        raise typer.BadParameter("group-by must be day, deployment, model, key or project")
    grouping: GroupBy = group_by  # type: ignore[assignment]
    end = datetime.now(UTC) + timedelta(seconds=1)
    start = end - timedelta(days=days)

    async def work(t: Tenancy) -> list[UsageAggregate]:
        if project is None:
            return list(await t.metering.report_all_projects(start, end, grouping))
        return list(await t.metering.report((await _project(t, project)).id, start, end, grouping))

    rows = _run(work)
    _table(
        (group_by.upper(), "REQUESTS", "ERRORS", "PROMPT_TOKENS", "COMPLETION_TOKENS", "COST_MICROS"),
        [(r.group, r.requests, r.errors, r.prompt_tokens, r.completion_tokens, r.cost_micros) for r in rows],
    )


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit code 1 if any entry was changed or removed."""

    async def work(t: Tenancy) -> tuple[bool, int | None]:
        return await t.audit.verify()

    ok, first_bad = _run(work)
    if not ok:
        typer.secho(f"audit log BROKEN at entry {first_bad}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo("audit log intact")


@audit_app.command("list")
def audit_list(limit: int = typer.Option(20, min=1, max=1000, help="Newest entries to show.")) -> None:
    """Show the newest audit entries."""
    entries = _run(lambda t: t.audit.list(limit=limit))
    _table(
        ("SEQ", "AT", "ACTOR", "ACTION", "TARGET"),
        [(e.seq, e.at.isoformat(timespec="seconds"), e.actor, e.action, e.target) for e in entries],
    )
