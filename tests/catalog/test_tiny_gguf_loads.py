"""The tiny GGUF fixture is a real model: llama.cpp (through xllamacpp) loads it and generates.

The engine runs in a child process because a llama.cpp assertion aborts the whole process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.fixtures.tiny_gguf import FIM_TOKENS, tiny_vocab, write_tiny_llama_gguf
from tests.support.installed import import_or_missing

import_or_missing("xllamacpp")

from alize.catalog.gguf import read_gguf_info  # noqa: E402

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
    # FIM as the engine sends it: the three FIM tokens by id around the prefix and suffix text
    fim = json.loads(sys.argv[2])
    if fim:
        pre, suf, mid = fim
        prompt = [pre, "the cat", suf, "the end", mid]
        server.handle_completions({"prompt": prompt, "max_tokens": 4}, lambda c: replies.append(c) or False)
        # and the same three tokens written as text are parsed as those single special tokens
        server.handle_completions(
            {"prompt": "<fim_prefix><fim_suffix><fim_middle>", "max_tokens": 1},
            lambda c: replies.append(c) or False,
        )
    print("RESULT " + json.dumps(replies))
    """
)


@pytest.mark.parametrize("with_fim", [False, True])
def test_xllamacpp_loads_and_generates(tmp_path: Path, with_fim: bool) -> None:
    model = write_tiny_llama_gguf(tmp_path / "tiny.gguf", with_fim=with_fim, seed=3)
    fim = read_gguf_info(model).traits.fim_token_ids  # what the engine sends as FIM markers
    tokens = tiny_vocab(with_fim)[0]
    if with_fim:
        assert fim == tuple(tokens.index(t) for t in FIM_TOKENS)
    else:
        assert fim is None
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model), json.dumps(list(fim) if fim else None)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    chat, completion, *infill = json.loads(line.removeprefix("RESULT "))
    if with_fim:
        mixed, as_text = infill
        assert mixed["object"] == "text_completion" and mixed["usage"]["completion_tokens"] >= 1
        # 3 FIM tokens + the two texts, each one or more tokens: nothing else was added
        assert 5 <= mixed["usage"]["prompt_tokens"] <= 3 + len("the cat") + len("the end")
        assert as_text["usage"]["prompt_tokens"] == 3  # each FIM marker is one token of the vocabulary
    else:
        assert infill == []
    assert chat["object"] == "chat.completion"
    assert chat["usage"]["completion_tokens"] >= 1
    assert chat["usage"]["prompt_tokens"] > 5  # the ChatML template wrapped the message
    assert isinstance(chat["choices"][0]["message"]["content"], str)
    assert completion["object"] == "text_completion"
    assert completion["usage"]["completion_tokens"] >= 1
