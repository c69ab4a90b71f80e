"""One fine-tuning run, end to end, in its own process: files -> tokens -> LoRA -> GGUF adapter.

Why a process: training is CPU-bound for minutes and holds the GIL in places; a crash or an
out-of-memory kill must cost the run, not the server or the worker's other jobs. The worker
starts ``python -m alize.jobs.finetune.run SPEC.json`` at the lowest CPU priority and reads one
JSON event a line on stdout (``{"type": "metrics"|"message"|"checkpoint"|"result", ...}``).
SIGTERM asks the run to stop between steps (cancellation); SIGKILL loses at most the steps since
the last checkpoint, because starting the same spec again resumes from it (same workdir).
With ``--lifeline`` the run exits as soon as its stdin reaches end of file: the worker keeps the
pipe open, so a worker that dies (even by SIGKILL) never leaves a run training on its own, and
the worker that takes the job over does not find two runs writing one workdir.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alize.errors import AlizeError
from alize.jobs.finetune.base import load_base, read_base_facts
from alize.jobs.finetune.dataset import parse_chat_jsonl, split_validation, tokenize_all
from alize.jobs.finetune.gguf_lora import write_lora_gguf
from alize.jobs.finetune.gguf_merged import write_merged_gguf
from alize.jobs.finetune.hyperparams import Hyperparameters
from alize.jobs.finetune.trainer import Checkpoint, Metrics, Trainer

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunSpec:
    base_gguf: Path
    training_file: Path
    validation_file: Path | None
    hyperparameters: Hyperparameters
    workdir: Path
    cache_dir: Path | None
    threads: int = 2
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "base_gguf": str(self.base_gguf),
            "training_file": str(self.training_file),
            "validation_file": str(self.validation_file) if self.validation_file else None,
            "hyperparameters": self.hyperparameters.model_dump(),
            "workdir": str(self.workdir),
            "cache_dir": str(self.cache_dir) if self.cache_dir else None,
            "threads": self.threads,
            "name": self.name,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        return cls(
            base_gguf=Path(data["base_gguf"]),
            training_file=Path(data["training_file"]),
            validation_file=Path(data["validation_file"]) if data.get("validation_file") else None,
            hyperparameters=Hyperparameters.model_validate(data["hyperparameters"]),
            workdir=Path(data["workdir"]),
            cache_dir=Path(data["cache_dir"]) if data.get("cache_dir") else None,
            threads=int(data.get("threads", 2)),
            name=str(data.get("name", "")),
        )


def adapter_path(workdir: Path) -> Path:
    return workdir / "adapter.gguf"


def merged_path(workdir: Path) -> Path:
    return workdir / "merged.gguf"


def run(spec: RunSpec, emit: Callable[[Event], None], should_stop: Callable[[], bool]) -> Event:
    """Train (resuming if the workdir holds a checkpoint) and write the GGUF adapter."""
    import torch

    torch.set_num_threads(spec.threads)
    hyper = spec.hyperparameters
    started = time.monotonic()
    facts = read_base_facts(spec.base_gguf)
    base = load_base(facts, spec.cache_dir)
    emit({"type": "message", "message": f"base loaded in {time.monotonic() - started:.1f} s"})
    seq_len = min(hyper.seq_len, facts.context_length or hyper.seq_len)
    train = tokenize_all(
        base.tokenizer,
        parse_chat_jsonl(spec.training_file.read_bytes(), what="training_file"),
        seq_len=seq_len,
        what="training_file",
    )
    if spec.validation_file is not None:
        valid = tokenize_all(
            base.tokenizer,
            parse_chat_jsonl(spec.validation_file.read_bytes(), what="validation_file"),
            seq_len=seq_len,
            what="validation_file",
        )
    else:
        train, valid = split_validation(train, hyper.validation_fraction, hyper.seed)
    pad = base.tokenizer.pad_token_id
    if pad is None:
        pad = base.tokenizer.eos_token_id or 0

    def on_metrics(m: Metrics) -> None:
        emit({"type": "metrics", "data": asdict(m)})

    def on_checkpoint(c: Checkpoint) -> None:
        emit({"type": "checkpoint", "step": c.step, "data": asdict(c.metrics)})

    trainer = Trainer(
        base.model,
        hyper,
        train,
        valid,
        spec.workdir,
        pad_id=int(pad),
        on_metrics=on_metrics,
        on_checkpoint=on_checkpoint,
        should_stop=should_stop,
    )
    resumed = trainer.resume()
    emit(
        {
            "type": "message",
            "message": (
                f"training on {len(train)} examples ({len(valid)} for validation), "
                f"{trainer.total_steps} steps" + (f", resumed at step {resumed}" if resumed else "")
            ),
            "data": {"resumed_at": resumed, "total_steps": trainer.total_steps},
        }
    )
    result = trainer.run()
    out: Event = {
        "type": "result",
        "cancelled": result.cancelled,
        "steps": result.steps,
        "trained_tokens": result.trained_tokens,
        "final": asdict(result.final) if result.final else None,
        "seconds": time.monotonic() - started,
    }
    if not result.cancelled:
        state = trainer.adapter_state()
        if hyper.export == "merged":
            merged = merged_path(spec.workdir)
            out["merged"] = str(
                write_merged_gguf(state, facts, alpha=hyper.lora_alpha, path=merged, name=spec.name)
            )
        else:
            adapter = adapter_path(spec.workdir)
            out["adapter"] = str(
                write_lora_gguf(state, facts, alpha=hyper.lora_alpha, path=adapter, name=spec.name)
            )
    return out


def _lifeline() -> None:
    """Exit at once when the parent closes (or loses) our stdin."""
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    os._exit(3)


def main() -> int:
    spec = RunSpec.from_json(json.loads(Path(sys.argv[1]).read_text()))
    if "--lifeline" in sys.argv[2:]:
        threading.Thread(target=_lifeline, name="lifeline", daemon=True).start()
    stop = {"requested": False}

    def request_stop(*_: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    with os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1) as out:
        sys.stdout = sys.stderr  # libraries that print must not corrupt the event stream

        def emit(event: Event) -> None:
            out.write(json.dumps(event) + "\n")

        try:
            emit(run(spec, emit, lambda: stop["requested"]))
        except AlizeError as exc:  # the client's data or base: the job fails naming what is wrong
            emit({"type": "error", "message": exc.message, "code": exc.code, "param": exc.param})
            return 1
        except Exception as exc:  # reported as the run's failure; the worker decides what next
            emit({"type": "error", "message": f"{type(exc).__name__}: {exc}"})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
