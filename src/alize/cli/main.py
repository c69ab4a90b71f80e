"""``alize``: serve the platform and talk to it from a terminal."""

from __future__ import annotations

import typer

from alize.cli import chat as chat_cmd
from alize.cli import serve as serve_cmd

app = typer.Typer(help="Alizé: models as a service on your own hardware.", no_args_is_help=True)
app.command("serve")(serve_cmd.serve)
app.command("chat")(chat_cmd.chat)

if __name__ == "__main__":
    app()
