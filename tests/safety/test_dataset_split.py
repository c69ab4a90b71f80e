"""The train / held-out split and the training label matrix (no model fitting: that is slow)."""

from __future__ import annotations

import json
from pathlib import Path

from alize.safety.categories import HEADS
from alize.safety.dataset import LabelledText, load_dev, split_indices
from alize.safety.train import extra_examples, label_matrix


def rows(n: int) -> list[LabelledText]:
    return [LabelledText(f"text {i}", {"S": int(i % 4 == 0), "V": 0}) for i in range(n)]


def test_split_is_disjoint_stratified_and_deterministic() -> None:
    data = rows(200)
    train, test = split_indices(data)
    assert sorted(train + test) == list(range(200))
    assert len(test) == 60
    assert sum(data[i].flagged for i in test) == 15  # 30 % of the 50 flagged rows
    assert split_indices(data) == (train, test)
    assert split_indices(data, seed=1) != (train, test)


def test_missing_labels_are_unknown_not_zero(tmp_path: Path) -> None:
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps({"prompt": "x", "S": 1}) + "\n" + json.dumps({"prompt": "y", "H": 0}) + "\n")
    first, second = load_dev(path)
    assert first.labels == {"S": 1} and first.flagged
    assert second.labels == {"H": 0} and not second.flagged


def test_label_matrix_marks_unknowns() -> None:
    dev = [LabelledText("a", {"S": 1}), LabelledText("b", {"S": 0})]
    extra = [("c", {"health": 1, "dangerous": 0})]
    y = label_matrix(dev, extra)
    col = {h: i for i, h in enumerate(HEADS)}
    assert y[0, col["S"]] == 1 and y[0, col["H"]] == -1
    assert y[0, col["dangerous"]] == -1  # flagged dev row: dangerous unknown
    assert y[1, col["dangerous"]] == 0 and y[1, col["health"]] == 0
    assert y[0, col["any"]] == 1 and y[1, col["any"]] == 0
    assert y[2, col["health"]] == 1 and y[2, col["S"]] == -1 and y[2, col["any"]] == 0


def test_shipped_extra_examples_cover_every_extra_head() -> None:
    examples = extra_examples()
    for head in ("dangerous", "health", "financial", "law"):
        assert sum(labels.get(head) == 1 for _, labels in examples) >= 20


def test_extra_examples_of_dev_categories_count_as_any() -> None:
    dev = [LabelledText("a", {"S": 0})]
    extra = [("b", {"SH": 1, "dangerous": 0}), ("c", {"SH": 0, "H": 0, "dangerous": 0})]
    y = label_matrix(dev, extra)
    col = {h: i for i, h in enumerate(HEADS)}
    assert y[1, col["any"]] == 1 and y[1, col["SH"]] == 1
    assert y[2, col["any"]] == 0


def test_shipped_extra_examples_cover_every_dev_category_but_minors() -> None:
    examples = extra_examples()
    for head in ("S", "H", "V", "HR", "SH", "H2", "V2"):
        assert sum(labels.get(head) == 1 for _, labels in examples) >= 8
    assert sum(all(v == 0 for v in labels.values()) for _, labels in examples) >= 100
