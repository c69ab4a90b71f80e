"""The multilingual stage (safety/multilingual.py): shipped weights, windows, scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alize.errors import ServiceUnavailableError
from alize.safety.categories import HEADS
from alize.safety.multilingual import (
    MultilingualClassifier,
    MultilingualWeights,
    default_weights_path,
    word_windows,
)

BENIGN = [
    "Peux-tu m'indiquer les horaires du musée d'Orsay le dimanche ?",
    "Morgen fällt der Deutschunterricht wegen einer Fortbildung aus.",
    "¿Cuál es la mejor época para visitar Granada?",
    "Domani porto la torta al compleanno di mia sorella.",
]


@pytest.fixture(scope="module")
def classifier() -> MultilingualClassifier:
    return MultilingualClassifier()


def test_shipped_weights_load_and_round_trip(tmp_path: Path) -> None:
    path = default_weights_path()
    assert path.stat().st_size < 200_000
    weights = MultilingualWeights.load(path)
    assert weights.heads == HEADS and weights.w.shape == (512, len(HEADS))
    assert np.all((weights.thresholds > 0) & (weights.thresholds < 1))
    copy = tmp_path / "m.npz"
    weights.save(copy)
    again = MultilingualWeights.load(copy)
    np.testing.assert_array_equal(again.w, weights.w)
    np.testing.assert_array_equal(again.gated, weights.gated)


def test_unreadable_weights_are_service_unavailable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"nope")
    with pytest.raises(ServiceUnavailableError):
        MultilingualWeights.load(broken)


def test_long_text_is_read_on_its_head_and_tail() -> None:
    text = " ".join(f"w{i}" for i in range(300))
    windows, owners = word_windows([text, "court"], 128)
    assert owners == [0, 0, 1]
    assert windows[0].split() == [f"w{i}" for i in range(128)]
    assert windows[1].split() == [f"w{i}" for i in range(172, 300)]
    assert windows[2] == "court"


def test_benign_texts_score_below_the_harm_threshold(classifier: MultilingualClassifier) -> None:
    scores = classifier.scores(BENIGN)
    harm = [HEADS.index(h) for h in HEADS if h not in ("health", "financial", "law")]
    assert scores.shape == (len(BENIGN), len(HEADS))
    assert float(scores[:, harm].max()) < 0.5
    np.testing.assert_allclose(np.concatenate([classifier.scores([t]) for t in BENIGN]), scores, atol=1e-5)
    assert classifier.scores([]).shape == (0, len(HEADS))
