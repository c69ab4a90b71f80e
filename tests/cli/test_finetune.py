"""The progress line ``alize finetune --follow`` draws: bar, step, loss, speed, time left."""

from __future__ import annotations

from alize.cli.finetune import progress_line


def test_the_progress_line_shows_step_loss_speed_and_eta() -> None:
    metrics = {"train_loss": 1.23456, "valid_loss": None, "tokens_per_second": 4100.4, "eta_s": 75}
    line = progress_line({"status": "running", "step": 10, "total_steps": 40}, metrics)
    assert line.startswith("[" + "#" * 7 + "." * 23 + "]")
    assert "  10/40" in line and "loss 1.2346" in line and "4,100 tok/s" in line
    assert "ETA 0:01:15" in line and line.endswith("running")
    assert "valid" not in line


def test_before_training_starts_the_line_has_no_numbers_to_show() -> None:
    line = progress_line({"status": "validating_files", "step": 0, "total_steps": None}, None)
    assert line == "[" + "." * 30 + "]     0/?  validating_files"
    done = progress_line(
        {"status": "succeeded", "step": 4, "total_steps": 4}, {"train_loss": 0.5, "valid_loss": 0.75}
    )
    assert "valid 0.7500" in done and "ETA" not in done
