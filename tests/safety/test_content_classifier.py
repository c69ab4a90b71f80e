"""The shipped classifier: loads, is deterministic, scores benign text low, windows long text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alize.errors import ServiceUnavailableError
from alize.safety.categories import HEADS
from alize.safety.classifier import ClassifierWeights, ContentClassifier, default_weights_path, split_windows

BENIGN = [
    "Could you recommend a good book about the history of sailing in Brittany?",
    "Our quarterly planning meeting moves to Wednesday at ten in the small conference room.",
    "Please convert this list of temperatures from Celsius to Fahrenheit for my homework.",
    "The garden looks lovely this spring; the tulips and the apple tree are in bloom.",
    "Write a function that returns the median of a list of integers.",
]


@pytest.fixture(scope="module")
def classifier() -> ContentClassifier:
    return ContentClassifier.from_path()


def test_packaged_weights_are_small_and_load() -> None:
    path = default_weights_path()
    assert path.is_file()
    assert path.stat().st_size < 5_000_000
    weights = ClassifierWeights.load(path)
    assert weights.heads == HEADS
    assert weights.dense_w.shape == (384, len(HEADS))
    assert weights.ngram_w.shape == (weights.buckets, len(HEADS))
    assert np.all((weights.thresholds > 0) & (weights.thresholds < 1))


def test_weights_round_trip(tmp_path: Path) -> None:
    weights = ClassifierWeights.load(default_weights_path())
    copy = tmp_path / "w.npz"
    weights.save(copy)
    again = ClassifierWeights.load(copy)
    assert again.heads == weights.heads
    np.testing.assert_array_equal(again.ngram_w, weights.ngram_w)
    np.testing.assert_array_equal(again.gated, weights.gated)


def test_unreadable_weights_raise_service_unavailable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ServiceUnavailableError):
        ClassifierWeights.load(broken)


def test_benign_texts_score_below_threshold(classifier: ContentClassifier) -> None:
    scores = classifier.scores(BENIGN)
    assert scores.shape == (len(BENIGN), len(HEADS))
    assert float(scores.max()) < 0.5


def test_scores_are_deterministic_and_batch_independent(classifier: ContentClassifier) -> None:
    batch = classifier.scores(BENIGN)
    again = classifier.scores(BENIGN)
    np.testing.assert_array_equal(batch, again)
    one_by_one = np.concatenate([classifier.scores([t]) for t in BENIGN])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)


def test_extra_heads_respond_to_their_topic(classifier: ContentClassifier) -> None:
    scores = classifier.score_dicts(
        ["Which stocks should I buy with my savings to double my money this year?"]
    )[0]
    assert scores["financial"] > 0.5
    assert scores["financial"] == max(scores[h] for h in ("financial", "health", "law"))


def test_long_text_is_windowed_and_takes_the_max(classifier: ContentClassifier) -> None:
    window_words = classifier.weights.window_words
    long_text = " ".join([BENIGN[i % len(BENIGN)] for i in range(120)])
    windows, owners = split_windows([long_text], window_words)
    assert len(windows) > 3 and set(owners) == {0}
    assert all(len(w.split()) <= window_words for w in windows)
    whole = classifier.scores([long_text])[0]
    per_window = classifier.scores(windows)
    np.testing.assert_allclose(whole, per_window.max(axis=0), atol=1e-6)


def test_empty_and_empty_batch(classifier: ContentClassifier) -> None:
    assert classifier.scores([]).shape == (0, len(HEADS))
    empty = classifier.scores([""])
    assert empty.shape == (1, len(HEADS)) and np.all(np.isfinite(empty))
