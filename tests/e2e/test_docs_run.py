"""The documentation runs as written: every shell command and code sample of README.md and
docs/*.md, against one live server.

The code blocks (``bash``, ``sh``, ``python``; see :mod:`tests.support.docblocks`) run in
document order, README first, with only what a reader would fill in replaced: the server's
address for ``127.0.0.1:8000`` and ``localhost:8000``, the admin key the README's
``alize keys create ops --admin`` printed for the ``alz-...`` / ``sk-...`` placeholders (and in
``ALIZE_API_KEY`` for the CLI), ``alize`` on the ``PATH`` for ``.venv/bin/alize``, a password for
``$PASSWORD``. Before that key exists the placeholders stay as written, which is the README's
promise that any string works until keys exist. A block that cannot run here is marked in the
markdown with ``<!-- doctest: skip REASON -->``; the test checks that every other block ran, so
a new block is covered by default. (The README's first quick start once failed as written:
``alize keys create --admin`` stopped with "Missing argument 'name'".)

The server is configured only to be quick: SmolLM2 on 2 slots of 1024 tokens, and a tiny random
GGUF with FIM tokens deployed as ``my-code-model``, the name docs/api.md's FIM example uses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from tests.e2e.server import LiveServer, live_server
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.support.docblocks import Block, runnable

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"


@dataclass
class Reader:
    """What a reader who follows the docs holds: the server, and the key once printed."""

    server: LiveServer
    data: Path
    bin: Path
    key: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    def fill(self, block: Block) -> str:
        host = self.server.url.removeprefix("http://")
        code = block.body.replace("127.0.0.1:8000", host).replace("localhost:8000", host)
        code = code.replace(".venv/bin/alize", "alize")
        assert ":8000" not in code, f"{block.where} names a server the test cannot stand in for"
        if self.key:
            code = code.replace("alz-...", self.key).replace("sk-...", self.key)
        return code

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
        env |= {
            "PATH": f"{self.bin}{os.pathsep}{env['PATH']}",
            "ALIZE_DATA_DIR": str(self.data),
            "ALIZE_URL": self.server.url,
            "PASSWORD": PASSWORD,
        }
        if self.key:
            env["ALIZE_API_KEY"] = self.key
        return env

    def run(self, block: Block, cwd: Path) -> subprocess.CompletedProcess[str]:
        code = self.fill(block)
        if block.lang == "python":
            command = [sys.executable, "-c", code]
        else:
            command = ["bash", "-e", "-o", "pipefail", "-c", code]
        return subprocess.run(
            command,
            input=f"{PASSWORD}\n{PASSWORD}\n",  # the password prompts ask twice
            env=self.env(),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    """Its own server: the README creates the first admin key, which ends open mode."""
    tmp = tmp_path_factory.mktemp("docs")
    data = tmp / "data"
    coder = write_tiny_llama_gguf(tmp / "tiny-coder.gguf", n_ctx=512, with_fim=True)
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "alize"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m alize.cli.main "$@"\n')
    shim.chmod(0o755)
    env = {
        "ALIZE_DATA_DIR": str(data),
        "ALIZE_DEPLOYMENTS": json.dumps(
            [
                {"name": "smollm2-135m-instruct"},
                {"name": "my-code-model", "model_path": str(coder), "parallel": 1, "ctx_per_slot": 512},
            ]
        ),
        "ALIZE_ENGINE__PARALLEL": "2",
        "ALIZE_ENGINE__CTX_PER_SLOT": "1024",
        "ALIZE_ENGINE__THREADS": "1",  # 2 threads spin-wait for each other on a busy machine
        "ALIZE_CHAT__MAX_TOKENS": "16",
    }
    with live_server(tmp, env) as server:
        yield Reader(server, data, bin_dir)


def test_every_code_block_of_the_docs_runs(reader: Reader, tmp_path: Path) -> None:
    blocks = runnable()
    assert len(blocks) >= 13, [b.where for b in blocks]
    ran = []
    for block in blocks:
        started = time.monotonic()
        done = reader.run(block, tmp_path)
        print(f"{block.where}: {time.monotonic() - started:.1f} s")  # what each block costs (-s)
        assert done.returncode == 0, (
            f"{block.where} failed:\n{block.body}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
        reader.outputs[block.where] = done.stdout
        ran.append(block.where)
        if reader.key is None and (printed := re.search(r"^(alz-\S+)$", done.stdout, re.M)):
            reader.key = printed.group(1)  # what the reader copies from `alize keys create`
    assert ran == [b.where for b in blocks]  # every block that is not marked ran, in order
    assert reader.key is not None, "no block printed an admin key"
    _what_the_blocks_promise(reader, blocks)


def _output(reader: Reader, blocks: list[Block], doc: str, text: str) -> str:
    """The output of the block of ``doc`` whose body contains ``text``."""
    block = next(b for b in blocks if b.doc == doc and text in b.body)
    return reader.outputs[block.where]


def _what_the_blocks_promise(reader: Reader, blocks: list[Block]) -> None:
    curl = _output(reader, blocks, "README.md", "curl -s")
    reply, _ = json.JSONDecoder().raw_decode(curl)
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]
    assert _output(reader, blocks, "README.md", "stream=True").strip()  # a streamed reply printed
    user = _output(reader, blocks, "README.md", "users create")
    assert re.search(r"user_[0-9a-f]{8,}$", user.strip()), user  # after the password prompts
    streamed = _output(reader, blocks, "docs/api.md", '"stream": true')
    events = [line for line in streamed.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and '"usage"' in events[-2], streamed  # include_usage
    # docs/safety.md: "A change ... is written to the audit log"
    audit = httpx.get(
        f"{reader.server.url}/admin/api/audit",
        headers={"Authorization": f"Bearer {reader.key}"},
        params={"limit": 100},
        timeout=30,
    )
    assert audit.status_code == 200, audit.text
    changes = [
        e["details"]["safety"]
        for e in audit.json()["data"]
        if e["action"] == "deployment.update" and e["target"] == "guarded-chat"
    ]
    assert len(changes) == 3, changes  # set input, set output, off output
