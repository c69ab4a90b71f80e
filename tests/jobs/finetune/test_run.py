"""The run process a fine-tuning job starts: killed with SIGKILL after a checkpoint, started again
on the same spec, it resumes from that checkpoint and finishes; SIGTERM stops it between steps."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.jobs.finetune.conftest import TOY, jsonl

from alize.jobs.finetune.hyperparams import Hyperparameters
from alize.jobs.finetune.run import RunSpec, adapter_path

pytestmark = pytest.mark.e2e


def _spec(tmp_path: Path, tiny_gguf: Path) -> Path:
    (tmp_path / "train.jsonl").write_bytes(jsonl(TOY))
    spec = RunSpec(
        base_gguf=tiny_gguf,
        training_file=tmp_path / "train.jsonl",
        validation_file=None,
        hyperparameters=Hyperparameters(training_steps=6, batch_size=4, checkpoint_every=2, seed=3),
        workdir=tmp_path / "work",
        cache_dir=tmp_path.parent / "run-base-cache",
        threads=1,
    )
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec.to_json()))
    return path


def _run(
    spec: Path, *, kill_after_checkpoint: int | None = None, term_after_step: int | None = None
) -> list[Any]:
    events: list[Any] = []
    with subprocess.Popen(
        [sys.executable, "-m", "alize.jobs.finetune.run", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            events.append(event)
            if event["type"] == "checkpoint" and event["step"] == kill_after_checkpoint:
                proc.send_signal(signal.SIGKILL)
            if event["type"] == "metrics" and event["data"]["step"] == term_after_step:
                proc.send_signal(signal.SIGTERM)
    return events


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path: Path, tiny_gguf: Path) -> None:
    spec = _spec(tmp_path, tiny_gguf)
    first = _run(spec, kill_after_checkpoint=2)
    assert [e["type"] for e in first][-1] == "checkpoint"  # died there: no result
    assert not adapter_path(tmp_path / "work").exists()
    second = _run(spec)
    resumed = [e for e in second if e["type"] == "message" and "data" in e]
    assert resumed[0]["data"]["resumed_at"] == 2
    steps = [e["data"]["step"] for e in second if e["type"] == "metrics"]
    assert steps == [3, 4, 5, 6]
    result = second[-1]
    assert result["type"] == "result" and not result["cancelled"] and result["steps"] == 6
    assert Path(result["adapter"]).is_file()


def test_sigterm_stops_the_run_between_steps(tmp_path: Path, tiny_gguf: Path) -> None:
    events = _run(_spec(tmp_path, tiny_gguf), term_after_step=1)
    result = events[-1]
    assert result["type"] == "result" and result["cancelled"] and result["steps"] < 6
    assert "adapter" not in result
