"""``alize users list|disable|enable|delete`` against the database named by the settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _alize(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env["ALIZE_DATA_DIR"] = str(data)
    return subprocess.run(
        [sys.executable, "-m", "alize.cli.main", "users", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_list_disable_and_erase(tmp_path: Path) -> None:
    made = _alize(
        tmp_path,
        *(
            "create",
            "--project",
            "acme",
            "--email",
            "ana@example.org",
            "--password-stdin",
            "--create-project",
        ),
        stdin="a-long-password\n",
    )
    assert made.returncode == 0, made.stderr
    user_id = made.stdout.strip().splitlines()[-1]
    assert _alize(tmp_path, "disable", "ana@example.org").stdout.strip() == user_id
    listed = _alize(tmp_path, "list")
    assert listed.returncode == 0 and f"{user_id}\t" in listed.stdout and "ana@example.org" in listed.stdout
    assert not listed.stdout.rstrip().endswith("\t-")  # disabled: the last column is when
    erased = _alize(tmp_path, "delete", "ana@example.org", "--yes")
    assert erased.returncode == 0, erased.stderr
    report = json.loads(erased.stdout)
    assert report["user_id"] == user_id and report["removed"]["conversations"] == 0
    assert _alize(tmp_path, "list").stdout == ""
    missing = _alize(tmp_path, "delete", "ana@example.org", "--yes")
    assert missing.returncode == 1 and "No chat user" in missing.stderr
