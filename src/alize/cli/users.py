"""``alize users create``: accounts for the chat web app, made by an administrator.

Like the tenancy commands, this opens the database named by the settings directly, so it works
before (or without) a running server. The password is read from stdin with ``--password-stdin``
(for scripts: ``echo "$PW" | alize users create ...``), else prompted for twice, hidden.
"""

from __future__ import annotations

import asyncio
import sys

import typer

from alize.chat.accounts import UserInfo, UserService
from alize.config import Settings
from alize.errors import AlizeError, NotFoundError
from alize.gateway.projects import ProjectService
from alize.store.database import open_database

users_app = typer.Typer(help="Chat users: people who log in to the chat page.", no_args_is_help=True)


async def _create(project: str, email: str, password: str, create_project: bool) -> tuple[UserInfo, bool]:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await open_database(settings.resolved_database_url())
    try:
        users = UserService(db)
        try:
            return await users.create(project, email, password), False
        except NotFoundError:
            if not create_project:
                raise
        await ProjectService(db).create(project)
        return await users.create(project, email, password), True
    finally:
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
