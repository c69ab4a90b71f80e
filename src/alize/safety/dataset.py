"""The labelled moderation data and the one train/held-out split that training and the bench share.

The development set (``shared/data/moderation-dev.jsonl``) has one JSON object a line: ``prompt``
plus binary labels under OpenAI's short codes (S, H, V, HR, SH, S3, H2, V2). A missing code means
*unknown*, not 0, so labels are kept as a mapping with only the known codes.

The split is defined here, and only here, so the bench evaluates on exactly the part training
never saw: stratified by "flagged" (any label 1), 30 % held out, drawn with numpy's PCG64 from a
fixed seed (PCG64 streams are stable across numpy versions).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The dev set's label codes, in a fixed order.
LABEL_CODES: tuple[str, ...] = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")
SPLIT_SEED = 20260
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class LabelledText:
    """One example: the text and the labels that are known for it (code -> 0 or 1)."""

    text: str
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """True when any known label is 1 (unknown labels count as not flagged)."""
        return any(v == 1 for v in self.labels.values())


def load_dev(path: Path) -> list[LabelledText]:
    """Read the dev JSONL; labels outside ``LABEL_CODES`` are ignored."""
    rows: list[LabelledText] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            raw = json.loads(line)
            labels = {code: int(raw[code]) for code in LABEL_CODES if raw.get(code) is not None}
            rows.append(LabelledText(text=str(raw["prompt"]), labels=labels))
    return rows


def split_indices(
    rows: Sequence[LabelledText], *, seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION
) -> tuple[list[int], list[int]]:
    """Stratified (by flagged) train/held-out split; returns sorted index lists (train, test)."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for stratum in (False, True):
        members = np.array([i for i, row in enumerate(rows) if row.flagged is stratum], dtype=np.int64)
        order = members[rng.permutation(len(members))]
        n_test = round(len(members) * test_fraction)
        test.extend(int(i) for i in order[:n_test])
        train.extend(int(i) for i in order[n_test:])
    return sorted(train), sorted(test)
