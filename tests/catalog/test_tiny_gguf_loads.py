"""The tiny GGUF fixture is a real model: llama.cpp (through xllamacpp) loads it and generates.

The engine runs in a child process because a llama.cpp assertion aborts the whole process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf
from tests.support.installed import import_or_missing

import_or_missing("xllamacpp")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import xllamacpp as x

    params = x.CommonParams()
    params.model.path = sys.argv[1]
    params.n_ctx = 256
    params.cpuparams.n_threads = 1
    server = x.Server(params)
    replies = []
    server.handle_chat_completions(
        {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8},
        lambda chunk: replies.append(chunk) or False,
    )
    server.handle_completions({"prompt": "the cat", "max_tokens": 4}, lambda c: replies.append(c) or False)
    print("RESULT " + json.dumps(replies))
    """
)


@pytest.mark.parametrize("with_fim", [False, True])
def test_xllamacpp_loads_and_generates(tmp_path: Path, with_fim: bool) -> None:
    model = write_tiny_llama_gguf(tmp_path / "tiny.gguf", with_fim=with_fim, seed=3)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    chat, completion = json.loads(line.removeprefix("RESULT "))
    assert chat["object"] == "chat.completion"
    assert chat["usage"]["completion_tokens"] >= 1
    assert chat["usage"]["prompt_tokens"] > 5  # the ChatML template wrapped the message
    assert isinstance(chat["choices"][0]["message"]["content"], str)
    assert completion["object"] == "text_completion"
    assert completion["usage"]["completion_tokens"] >= 1
