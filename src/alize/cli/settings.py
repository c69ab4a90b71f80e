"""Settings for a CLI command: a misconfiguration is one readable error per field, not a traceback."""

from __future__ import annotations

from typing import Any

import typer
from pydantic import ValidationError

from alize.config import Settings


def load_settings(**overrides: Any) -> Settings:
    """``Settings`` from the environment (and ``overrides``), or exit 2 naming each bad field."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        typer.secho("error: invalid settings", fg=typer.colors.RED, err=True)
        for problem in exc.errors():
            where = ".".join(str(part) for part in problem["loc"])
            typer.echo(f"  {where}: {problem['msg']}", err=True)
        raise typer.Exit(2) from None
