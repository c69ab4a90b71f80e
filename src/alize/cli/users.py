"""``alize users create|list|disable|enable|delete``: the chat web app's accounts, for administrators.

Like the tenancy commands, this opens the database named by the settings directly, so it works
before (or without) a running server. The password is read from stdin with ``--password-stdin``
(for scripts: ``echo "$PW" | alize users create ...``), else prompted for twice, hidden.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from alize.cli.settings import load_settings, open_configured_database
from alize.errors import AlizeError, NotFoundError

if TYPE_CHECKING:  # imported when a command runs (cli/settings.py says why)
    from alize.chat.accounts import UserInfo, UserService, UserSummary
    from alize.chat.privacy import ErasureReport, PrivacyService
    from alize.gateway.audit import AuditService

T = TypeVar("T")

users_app = typer.Typer(help="Chat users: people who log in to the chat page.", no_args_is_help=True)


async def _create(project: str, email: str, password: str, create_project: bool) -> tuple[UserInfo, bool]:
    from alize.chat.accounts import UserService
    from alize.gateway.projects import ProjectService

    db = await open_configured_database(load_settings())
    users = UserService(db)
    try:
        try:
            return await users.create(project, email, password), False
        except NotFoundError:
            if not create_project:
                raise
        await ProjectService(db).create(project)
        return await users.create(project, email, password), True
    finally:
        users.passwords.close()
        await db.close()


@users_app.command("create")
def create(
    project: str = typer.Option(..., "--project", help="The user's project (its id or name)."),
    email: str = typer.Option(..., "--email", help="The address the user logs in with."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
    create_project: bool = typer.Option(
        False, "--create-project", help="Create the project (by name) if it does not exist."
    ),
) -> None:
    """Create a chat user in a project; prints the new user's id."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user, made_project = asyncio.run(_create(project, email, password, create_project))
    except AlizeError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    if made_project:
        typer.secho(f"created project '{project}'", err=True)
    typer.echo(user.id)


async def _with_services(work: Callable[[UserService, PrivacyService, AuditService], Awaitable[T]]) -> T:
    from alize.chat.accounts import UserService
    from alize.chat.conversations import ConversationService
    from alize.chat.privacy import PrivacyService
    from alize.gateway.audit import AuditService
    from alize.gateway.tenancy import server_secret

    settings = load_settings()
    db = await open_configured_database(settings)
    users = UserService(db)
    privacy = PrivacyService(db, ConversationService(db), server_secret(settings))
    try:
        return await work(users, privacy, AuditService(db))
    finally:
        users.passwords.close()
        await db.close()


def _run(work: Callable[[UserService, PrivacyService, AuditService], Awaitable[T]]) -> T:
    try:
        return asyncio.run(_with_services(work))
    except AlizeError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


async def _resolve(users: UserService, who: str) -> str:
    """A user id, or the id of the account with this email; 404 otherwise."""
    if "@" in who:
        found = await users.id_of(who)
        if found is None:
            raise NotFoundError(f"No chat user with email '{who}'.")
        return found
    return (await users.get(who)).id


@users_app.command("list")
def list_users(
    project: str | None = typer.Option(None, "--project", help="Only this project (its id)."),
) -> None:
    """List chat users: id, project, email, created, disabled."""

    async def work(users: UserService, _: PrivacyService, __: AuditService) -> list[UserSummary]:
        return await users.list(project)

    for u in _run(work):
        disabled = u.disabled_at.isoformat() if u.disabled_at else "-"
        typer.echo(f"{u.id}\t{u.project_id}\t{u.email}\t{u.created_at.isoformat()}\t{disabled}")


def _set_disabled(who: str, disabled: bool) -> None:
    async def work(users: UserService, _: PrivacyService, audit: AuditService) -> UserSummary:
        user = await users.set_disabled(await _resolve(users, who), disabled)
        action = "chat_user.disable" if disabled else "chat_user.enable"
        await audit.append("cli", action, user.id, {"project_id": user.project_id})
        return user

    typer.echo(_run(work).id)


@users_app.command("disable")
def disable(who: str = typer.Argument(..., help="The user's id or email.")) -> None:
    """Disable a chat user: logged out everywhere at once, and cannot log in."""
    _set_disabled(who, True)


@users_app.command("enable")
def enable(who: str = typer.Argument(..., help="The user's id or email.")) -> None:
    """Enable a disabled chat user again."""
    _set_disabled(who, False)


@users_app.command("delete")
def delete(
    who: str = typer.Argument(..., help="The user's id or email."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Erase a chat user and all their data (GDPR); prints what was removed as JSON."""
    if not yes:
        typer.confirm(f"Erase {who} and all their conversations, documents and agents?", abort=True)

    async def work(users: UserService, privacy: PrivacyService, audit: AuditService) -> ErasureReport:
        report = await privacy.erase(await _resolve(users, who))
        details = {"project_id": report.project_id, "removed": report.removed}
        await audit.append("cli", "chat_user.erase", report.user_id, details)
        return report

    report = _run(work)
    typer.echo(json.dumps(dataclasses.asdict(report), indent=2))
