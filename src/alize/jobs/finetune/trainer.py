"""The LoRA training loop: seeded, reproducible, cancellable between steps, resumable.

Why a hand-written loop rather than ``transformers.Trainer`` or ``trl``: a job needs exactly
four things those hide: a stop check between steps (cancellation), a checkpoint that holds
everything a resumed run needs to continue *bit for bit* (adapter, optimizer, scheduler, step),
memory bounded by ``micro_batch_size x seq_len`` whatever the dataset's size, and metrics as
events. The loop is about a hundred lines; the dependency it would replace is far larger.

Reproducibility: the LoRA init is drawn from ``seed``; the order of examples is a permutation
per epoch drawn from ``seed + epoch``, so step ``s`` always trains the same examples, whether the
run was interrupted or not; there is no dropout. A step's loss is the mean over all its target
tokens (micro-batches add up token sums, then divide once), so the micro-batch size changes peak
memory, not the result.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alize.jobs.finetune.dataset import IGNORE, Example
from alize.jobs.finetune.hyperparams import LLAMA_TARGETS, Hyperparameters

_KEEP_CHECKPOINTS = 3


@dataclass(frozen=True, slots=True)
class Metrics:
    """One progress report; ``valid_*`` only on evaluation steps."""

    step: int
    total_steps: int
    epoch: float
    train_loss: float
    train_mean_token_accuracy: float
    tokens: int
    tokens_per_second: float
    elapsed_s: float
    eta_s: float
    learning_rate: float
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    step: int
    path: Path
    metrics: Metrics


@dataclass(slots=True)
class TrainingResult:
    steps: int
    trained_tokens: int
    final: Metrics | None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    cancelled: bool = False


class Cancelled(Exception):
    """Raised inside the loop when the stop check says so; the last checkpoint stays."""


def plan_steps(n_train: int, hyper: Hyperparameters) -> int:
    if hyper.training_steps is not None:
        return hyper.training_steps
    return max(1, math.ceil(n_train / hyper.batch_size)) * hyper.n_epochs


def batch_indices(step: int, n_train: int, hyper: Hyperparameters) -> list[int]:
    """The examples of optimizer step ``step`` (0-based): a seeded permutation per epoch, read
    as one stream, so the mapping from step to examples never depends on interruptions."""
    out: list[int] = []
    start = step * hyper.batch_size
    for position in range(start, start + hyper.batch_size):
        epoch, offset = divmod(position, n_train)
        order = list(range(n_train))
        random.Random(hyper.seed + epoch).shuffle(order)
        out.append(order[offset])
    return out


def _schedule(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warm-up, then linear decay to zero: the usual LoRA schedule."""
    warmup = int(total * warmup_fraction)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


class Trainer:
    def __init__(
        self,
        model: Any,
        hyper: Hyperparameters,
        train: Sequence[Example],
        valid: Sequence[Example],
        workdir: Path,
        *,
        pad_id: int,
        on_metrics: Callable[[Metrics], None] = lambda m: None,
        on_checkpoint: Callable[[Checkpoint], None] = lambda c: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        import torch
        from peft import LoraConfig, get_peft_model

        if not train:
            raise ValueError("no training examples")
        self.hyper = hyper
        self.train, self.valid = list(train), list(valid)
        self.workdir = workdir
        self.pad_id = pad_id
        self.on_metrics, self.on_checkpoint, self.should_stop = on_metrics, on_checkpoint, should_stop
        self.total_steps = plan_steps(len(self.train), hyper)
        every = hyper.checkpoint_every or max(1, self.total_steps // 10)
        self.checkpoint_every = every
        torch.manual_seed(hyper.seed)
        config = LoraConfig(
            r=hyper.lora_rank,
            lora_alpha=hyper.lora_alpha,
            target_modules=list(LLAMA_TARGETS),
            lora_dropout=0.0,
            bias="none",
        )
        with warnings.catch_warnings():
            # peft reads a property transformers 5 deprecated; nothing to act on here
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.model = get_peft_model(model, config)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=hyper.learning_rate, weight_decay=hyper.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _schedule(s, self.total_steps, hyper.warmup_fraction)
        )
        self.step = 0
        self.tokens = 0
        self.checkpoints: list[Checkpoint] = []

    # ------------------------------------------------------------------ state

    def adapter_state(self) -> dict[str, Any]:
        """The LoRA tensors only (PEFT names), detached copies."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if "lora_" in k}

    def _checkpoint_dir(self) -> Path:
        return self.workdir / "checkpoints"

    def save_checkpoint(self, metrics: Metrics) -> Checkpoint:
        import torch

        root = self._checkpoint_dir()
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"step-{self.step:06d}"
        staging = root / f".step-{self.step:06d}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        torch.save(
            {
                "step": self.step,
                "tokens": self.tokens,
                "adapter": self.adapter_state(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "metrics": asdict(metrics),
            },
            staging / "state.pt",
        )
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)  # a checkpoint exists whole or not at all
        checkpoint = Checkpoint(step=self.step, path=final, metrics=metrics)
        self.checkpoints.append(checkpoint)
        for old in self.checkpoints[:-_KEEP_CHECKPOINTS]:
            shutil.rmtree(old.path, ignore_errors=True)
        self.checkpoints = self.checkpoints[-_KEEP_CHECKPOINTS:]
        self.on_checkpoint(checkpoint)
        return checkpoint

    def resume(self) -> int:
        """Continue from the newest whole checkpoint in the workdir; returns its step (0 if none)."""
        import torch

        root = self._checkpoint_dir()
        found = sorted(p for p in root.glob("step-*") if (p / "state.pt").is_file()) if root.is_dir() else []
        if not found:
            return 0
        for path in found:
            state = torch.load(path / "state.pt", weights_only=False)
            metrics = Metrics(**state["metrics"])
            self.checkpoints.append(Checkpoint(step=int(state["step"]), path=path, metrics=metrics))
        state = torch.load(found[-1] / "state.pt", weights_only=False)
        own = self.model.state_dict()
        with torch.no_grad():
            for key, tensor in state["adapter"].items():
                own[key].copy_(tensor)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.tokens = int(state["tokens"])
        return self.step

    # ------------------------------------------------------------------ passes

    def _micro_batches(self, examples: Sequence[Example]) -> list[list[Example]]:
        size = self.hyper.micro_batch_size
        return [list(examples[i : i + size]) for i in range(0, len(examples), size)]

    def _forward(self, batch: Sequence[Example]) -> tuple[Any, int, int]:
        """(sum of token losses, target tokens, correctly predicted target tokens)."""
        import torch

        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, example in enumerate(batch):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            labels[row, :n] = torch.tensor(example.labels)
            mask[row, :n] = 1
        logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1, :]
        targets = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )
        keep = targets != IGNORE
        correct = int((logits.argmax(-1)[keep] == targets[keep]).sum())
        return loss, int(keep.sum()), correct

    def evaluate(self) -> tuple[float, float] | None:
        import torch

        if not self.valid:
            return None
        total, count, correct = 0.0, 0, 0
        self.model.eval()
        with torch.no_grad():
            for batch in self._micro_batches(self.valid):
                loss, n, ok = self._forward(batch)
                total, count, correct = total + float(loss), count + n, correct + ok
        self.model.train()
        return total / max(1, count), correct / max(1, count)

    def run(self) -> TrainingResult:
        started = time.monotonic()
        start_step, start_tokens = self.step, self.tokens
        last: Metrics | None = self.checkpoints[-1].metrics if self.checkpoints else None
        self.model.train()
        while self.step < self.total_steps:
            if self.should_stop():
                return TrainingResult(self.step, self.tokens, last, self.checkpoints, cancelled=True)
            chosen = [self.train[i] for i in batch_indices(self.step, len(self.train), self.hyper)]
            targets = sum(e.target_tokens for e in chosen)
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum, correct = 0.0, 0
            for batch in self._micro_batches(chosen):
                if self.should_stop():  # a long step can be abandoned; the last checkpoint stays
                    return TrainingResult(self.step, self.tokens, last, self.checkpoints, cancelled=True)
                loss, _, ok = self._forward(batch)
                (loss / max(1, targets)).backward()
                loss_sum, correct = loss_sum + float(loss.detach()), correct + ok
            lr = float(self.scheduler.get_last_lr()[0])
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            self.tokens += sum(len(e.input_ids) for e in chosen)
            elapsed = time.monotonic() - started
            rate = (self.tokens - start_tokens) / elapsed if elapsed > 0 else 0.0
            done = self.step - start_step
            eta = elapsed / done * (self.total_steps - self.step) if done else 0.0
            evaluation = None
            checkpoint_now = self.step % self.checkpoint_every == 0 or self.step == self.total_steps
            if checkpoint_now:
                evaluation = self.evaluate()
            last = Metrics(
                step=self.step,
                total_steps=self.total_steps,
                epoch=self.step * self.hyper.batch_size / len(self.train),
                train_loss=loss_sum / max(1, targets),
                train_mean_token_accuracy=correct / max(1, targets),
                tokens=self.tokens,
                tokens_per_second=rate,
                elapsed_s=elapsed,
                eta_s=eta,
                learning_rate=lr,
                valid_loss=evaluation[0] if evaluation else None,
                valid_mean_token_accuracy=evaluation[1] if evaluation else None,
            )
            self.on_metrics(last)
            if checkpoint_now:
                self.save_checkpoint(last)
        return TrainingResult(self.step, self.tokens, last, self.checkpoints)

    def merged_model(self) -> Any:
        """The base with the adapter folded in (for comparisons and the merged export)."""
        return self.model.merge_and_unload()
