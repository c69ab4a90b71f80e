"""The fenced blocks of the docs, read without a server (the live run is
``tests/e2e/test_docs_run.py``): every fence declares its language, every skipped block says why,
and even the blocks that cannot run here name only commands, options and settings that exist,
and parse."""

from __future__ import annotations

import json
import subprocess

import pytest
import typer
from tests.support.docblocks import (
    CODE,
    DATA,
    Block,
    alize_invocations,
    blocks,
    check_cli_words,
    env_names,
    setting_env_names,
)

from alize.cli.main import app
from alize.config import Settings
from alize.safety.policy import SafetyPolicy

ALL = blocks()
SHELL = [b for b in ALL if b.lang in {"bash", "sh"}]


def test_every_fence_names_code_or_data() -> None:
    unnamed = [f"{b.where} ({b.lang or 'no language'})" for b in ALL if b.lang not in CODE | DATA]
    assert unnamed == [], f"tag each fence with one of {sorted(CODE | DATA)}"


def test_only_code_is_skipped_and_each_skip_says_why() -> None:
    skipped = [b for b in ALL if b.skip is not None]
    assert [b.where for b in skipped if not b.is_code] == []
    assert [b.where for b in skipped if len(b.skip or "") < 12] == []  # a reason, not a word


@pytest.mark.parametrize("block", SHELL, ids=[b.where for b in SHELL])
def test_shell_blocks_parse(block: Block) -> None:
    done = subprocess.run(["bash", "-n"], input=block.body, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_python_blocks_compile() -> None:
    for block in ALL:
        if block.lang == "python":
            compile(block.body, block.where, "exec")


def test_every_alize_command_in_the_docs_exists() -> None:
    root = typer.main.get_command(app)
    wrong = []
    for block in SHELL:
        for args in alize_invocations(block.body):
            if (why := check_cli_words(root, args)) is not None:
                wrong.append(f"{block.where}: {why}")
    assert wrong == []
    assert sum(1 for b in SHELL for _ in alize_invocations(b.body)) >= 20


def test_every_setting_in_the_docs_blocks_exists() -> None:
    known = setting_env_names(Settings)
    used = {(b.where, name) for b in SHELL for name in env_names(b.body)}
    assert len(used) >= 5
    assert sorted(f"{where}: {name}" for where, name in used if name not in known) == []


def test_json_samples_parse_and_the_policy_sample_validates() -> None:
    """A JSON sample is valid JSON unless it elides a part with "…"; the content-filter policy of
    docs/safety.md is one the server accepts."""
    samples = [b for b in ALL if b.lang == "json"]
    assert len(samples) >= 5
    for block in samples:
        if "…" not in block.body:
            json.loads(block.body)
    policy = next(b for b in samples if b.doc == "docs/safety.md" and '"window_tokens"' in b.body)
    assert SafetyPolicy.model_validate_json(policy.body).window_tokens == 16
