"""The language of a text decides which stage judges it (safety/staged.py), with stand-in stages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from alize.safety.staged import StagedClassifier, stage_of

HEADS = ("S", "any")


class _Stage:
    def __init__(self, value: float, heads: tuple[str, ...] = HEADS) -> None:
        self.value = value
        self.heads = heads
        self.seen: list[list[str]] = []

    def scores(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.seen.append(list(texts))
        return np.full((len(texts), len(self.heads)), self.value, dtype=np.float32)


LANG = {"hello there": "en", "bonjour à tous": "fr", "ok": None, "hallo zusammen": "de"}


def test_each_language_goes_to_its_stage_and_each_stage_runs_once_per_batch() -> None:
    english, multilingual = _Stage(0.2), _Stage(0.7)
    staged = StagedClassifier(english, multilingual, LANG.__getitem__)
    texts = ["hello there", "bonjour à tous", "ok", "hallo zusammen"]
    scores = staged.scores(texts)
    assert english.seen == [["hello there", "ok"]]
    assert multilingual.seen == [["bonjour à tous", "ok", "hallo zusammen"]]
    # English text: the English stage alone; French/German: the multilingual one alone;
    # undetermined: the higher of the two
    np.testing.assert_allclose(scores[:, 0], [0.2, 0.7, 0.7, 0.7])
    assert staged.stages(texts) == ["english", "multilingual", "both", "multilingual"]


def test_undetermined_text_takes_the_higher_score_of_the_two() -> None:
    staged = StagedClassifier(_Stage(0.9), _Stage(0.1), lambda _: None)
    np.testing.assert_allclose(staged.scores(["ok"]), [[0.9, 0.9]])
    assert staged.score_dicts(["ok"]) == [{"S": pytest.approx(0.9), "any": pytest.approx(0.9)}]


def test_empty_batch_runs_no_stage() -> None:
    english, multilingual = _Stage(0.2), _Stage(0.7)
    assert StagedClassifier(english, multilingual, LANG.__getitem__).scores([]).shape == (0, 2)
    assert english.seen == [] and multilingual.seen == []


def test_stages_must_share_their_heads() -> None:
    with pytest.raises(ValueError, match="same heads"):
        StagedClassifier(_Stage(0.1), _Stage(0.1, heads=("S",)), LANG.__getitem__)


@pytest.mark.parametrize(("language", "stage"), [("en", "english"), ("it", "multilingual"), (None, "both")])
def test_stage_of(language: str | None, stage: str) -> None:
    assert stage_of(language) == stage
