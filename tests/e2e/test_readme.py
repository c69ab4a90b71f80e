"""The README's shell commands and code samples run as written, against a live server.

Every fenced ``bash`` and ``python`` block of README.md is extracted and run in order, with only
the placeholders a reader would fill in replaced: the server's address for
``http://127.0.0.1:8000``, this interpreter's ``alize`` for ``.venv/bin/alize``, and the data
folder of the server for the CLI. A change to the CLI or the API that breaks the README fails
here. The blocks that cannot run inside a test say why in ``NOT_RUN``; anything else that is
added to the README runs. (The README's first quick start once failed as written:
``alize keys create --admin`` stops with "Missing argument 'name'".)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.server import LiveServer, live_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
#: blocks (by their first command) that a test cannot run, with the reason
NOT_RUN = {
    "make run": "starts the server this test already runs; `make test` is the suite itself",
    ".venv/bin/alize models pull": "downloads a 1 GB pack from PyPI (tests/e2e/test_packs.py pulls one)",
}
PASSWORD = "correct horse battery"


def readme_blocks() -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in BLOCK.findall((ROOT / "README.md").read_text())]


def _skipped(body: str) -> bool:
    first = body.strip().splitlines()[0]
    return any(first.startswith(prefix) for prefix in NOT_RUN)


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    """Its own server: the README creates the first admin key, which ends open mode."""
    tmp = tmp_path_factory.mktemp("readme")
    data = tmp / "data"
    env = {
        "ALIZE_DATA_DIR": str(data),
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": "smollm2-135m-instruct"}]),
        "ALIZE_ENGINE__PARALLEL": "2",
        "ALIZE_ENGINE__CTX_PER_SLOT": "1024",
        "ALIZE_CHAT__MAX_TOKENS": "16",
    }
    with live_server(tmp, env) as server:
        yield server, data


def test_every_readme_block_is_run_or_says_why_not() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 5
    skipped = [body.strip().splitlines()[0] for _, body in blocks if _skipped(body)]
    assert len(skipped) == len(NOT_RUN), skipped  # every exception is still in the README


def test_the_readme_runs_as_written(readme_server: tuple[LiveServer, Path], tmp_path: Path) -> None:
    server, data = readme_server
    alize = f"{sys.executable} -m alize.cli.main"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")},
        "ALIZE_DATA_DIR": str(data),
        "ALIZE_URL": server.url,
    }
    ran = []
    for kind, body in readme_blocks():
        if _skipped(body):
            continue
        code = body.replace("http://127.0.0.1:8000", server.url).replace(".venv/bin/alize", alize)
        if kind == "bash":
            command = ["bash", "-e", "-o", "pipefail", "-c", code]
        else:
            command = [sys.executable, "-c", code]
        done = subprocess.run(
            command,
            input=f"{PASSWORD}\n{PASSWORD}\n",  # the password prompts ask twice
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        failed = f"README block failed:\n{body}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        assert done.returncode == 0, failed
        ran.append((body, done.stdout))
    assert len(ran) == len(readme_blocks()) - len(NOT_RUN)
    # what the blocks promise: a reply, a streamed reply, a user, an admin key printed once
    curl = next(out for body, out in ran if body.startswith("curl"))
    reply, _ = json.JSONDecoder().raw_decode(curl)
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]
    streamed = next(out for body, out in ran if body.startswith("from openai"))
    assert streamed.strip()
    user = next(out for body, out in ran if "users create" in body)
    assert re.search(r"user_[0-9a-f]{8,}$", user.strip()), user  # after the password prompts
    keys = next(out for body, out in ran if "keys create" in body)
    assert re.search(r"^alz-\S+$", keys, re.M), keys
