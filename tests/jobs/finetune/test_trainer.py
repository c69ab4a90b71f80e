"""The LoRA loop: it learns, it is reproducible, a resumed run equals an uninterrupted one, and it
stops between steps when asked."""

from __future__ import annotations

from pathlib import Path

import torch
from tests.jobs.finetune.conftest import TOY, jsonl

from alize.jobs.finetune.base import BaseFacts, load_base
from alize.jobs.finetune.dataset import parse_chat_jsonl, tokenize_all
from alize.jobs.finetune.hyperparams import Hyperparameters
from alize.jobs.finetune.trainer import Metrics, Trainer, batch_indices


def _trainer(
    facts: BaseFacts, cache: Path, workdir: Path, hyper: Hyperparameters, **kwargs: object
) -> Trainer:
    base = load_base(facts, cache)
    examples = tokenize_all(base.tokenizer, parse_chat_jsonl(jsonl(TOY)), seq_len=256, what="t")
    return Trainer(base.model, hyper, examples[:10], examples[10:], workdir, pad_id=0, **kwargs)  # type: ignore[arg-type]


HYPER = Hyperparameters(
    training_steps=6, batch_size=4, micro_batch_size=3, learning_rate=5e-3, checkpoint_every=3, seed=5
)


def test_step_batches_depend_only_on_seed_and_step() -> None:
    hyper = Hyperparameters(batch_size=4, seed=1)
    first = [batch_indices(s, 10, hyper) for s in range(5)]
    assert first == [batch_indices(s, 10, hyper) for s in range(5)]
    # every example once per epoch: the first 10 positions of the stream are a permutation
    stream = [i for batch in first for i in batch]
    assert sorted(stream[:10]) == list(range(10))
    assert first != [batch_indices(s, 10, Hyperparameters(batch_size=4, seed=2)) for s in range(5)]


def test_training_learns_and_resuming_gives_the_same_adapter(
    tiny_facts: BaseFacts, tmp_path: Path, tmp_path_factory: object
) -> None:
    cache = tmp_path / "cache"
    seen: list[Metrics] = []
    straight = _trainer(tiny_facts, cache, tmp_path / "a", HYPER, on_metrics=seen.append)
    result = straight.run()
    assert result.steps == 6 and not result.cancelled
    assert [m.step for m in seen] == [1, 2, 3, 4, 5, 6]
    assert seen[-1].train_loss < seen[0].train_loss
    assert seen[2].valid_loss is not None and seen[1].valid_loss is None  # evaluated at checkpoints
    assert [c.step for c in result.checkpoints] == [3, 6]
    assert result.trained_tokens == seen[-1].tokens > 0

    # the same run, killed after its first checkpoint and resumed by a new process
    done: list[int] = []
    interrupted = _trainer(
        tiny_facts,
        cache,
        tmp_path / "b",
        HYPER,
        on_metrics=lambda m: done.append(m.step),
        should_stop=lambda: len(done) >= 4,  # stops inside step 5: steps 4-5 are lost, 3 is kept
    )
    assert interrupted.run().cancelled
    resumed = _trainer(tiny_facts, cache, tmp_path / "b", HYPER)
    assert resumed.resume() == 3
    again = resumed.run()
    assert again.steps == 6
    a, b = straight.adapter_state(), resumed.adapter_state()
    assert a.keys() == b.keys() and len(a) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_a_stop_request_ends_the_run_between_steps(tiny_facts: BaseFacts, tmp_path: Path) -> None:
    steps: list[int] = []
    trainer = _trainer(
        tiny_facts,
        tmp_path / "cache",
        tmp_path / "w",
        HYPER,
        on_metrics=lambda m: steps.append(m.step),
        should_stop=lambda: len(steps) >= 2,
    )
    result = trainer.run()
    assert result.cancelled and result.steps == 2 and steps == [1, 2]
