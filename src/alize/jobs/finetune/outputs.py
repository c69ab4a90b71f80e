"""What a fine-tuning job writes besides the adapter: the merged training file its run reads,
and OpenAI's result file (the step metrics as CSV)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from alize.jobs.files import FileService
from alize.jobs.finetune.records import FineTuningJob, FineTuningRecords

_MAX_REPEAT = 10
_COLUMNS = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")


def weighted_lines(files: list[tuple[bytes, float]]) -> bytes:
    """One JSONL from several files, each file's lines repeated by its relative weight."""
    lightest = min(weight for _, weight in files)
    out = bytearray()
    for data, weight in files:
        repeat = max(1, min(_MAX_REPEAT, round(weight / lightest)))
        lines = [line for line in data.splitlines() if line.strip()]
        for _ in range(repeat):
            out += b"".join(line + b"\n" for line in lines)
    return bytes(out)


async def metrics_csv(records: FineTuningRecords, files: FileService, job: FineTuningJob) -> str:
    """Store ``step_metrics.csv`` (purpose ``fine-tune-results``) for ``job``; returns its id."""
    events = await records.events(
        job.id, job.project_id, types=("metrics",), limit=1_000_000, newest_first=False
    )
    by_step = {int((e.data or {}).get("step", 0)): e.data or {} for e in events}  # a step run twice: last

    def cell(value: object) -> str:
        return "" if value is None else str(value)

    lines = [",".join(_COLUMNS)] + [
        ",".join(cell(d.get(c)) for c in _COLUMNS) for _, d in sorted(by_step.items())
    ]

    async def pages() -> AsyncIterator[list[str]]:
        yield lines

    staged = await files.stage(
        job.project_id,
        pages(),
        filename="step_metrics.csv",
        purpose="fine-tune-results",
        sample_type="fine-tune-results",
        source="fine-tune",
    )
    async with records.db.transaction() as session:
        stored = await files.commit(session, staged)
    return stored.id
