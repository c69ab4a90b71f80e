"""``alize`` starts without the server's layers: every command module is imported whenever the CLI
runs (Typer builds the whole tree), so a top-level import of the storage layer or the gateway's
services made every command, ``alize files list`` included, pay for them (2.4 s against 0.8 s on a
2-core VM). What a command needs when it runs is imported inside it."""

from __future__ import annotations

import json
import subprocess
import sys

#: what only the commands that open the database or serve need
HEAVY = ("sqlalchemy", "alembic", "alize.store", "alize.config", "alize.gateway.tenancy", "fastapi", "numpy")


def test_the_cli_imports_none_of_the_servers_layers() -> None:
    code = (
        "import json, sys; import alize.cli.main; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout) == []


def test_every_command_group_still_renders_its_help() -> None:
    """Typer reads each command's signature when it builds the tree: none names a type that is
    now imported late."""
    for group in ("keys", "projects", "users", "safety", "ray", "files", "batch", "models", "finetune"):
        shown = subprocess.run(
            [sys.executable, "-m", "alize.cli.main", group, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shown.returncode == 0, shown.stderr
