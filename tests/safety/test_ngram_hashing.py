"""The n-gram hash is part of the weights' contract: if bucket ids move, the shipped weights are wrong."""

from __future__ import annotations

import numpy as np

from alize.safety.ngrams import ngram_buckets, sparse_tfidf


def test_bucket_ids_are_pinned() -> None:
    ids, counts = ngram_buckets("a", 1 << 17)
    assert ids.tolist() == [9808, 36617, 64140, 96048]
    assert counts.tolist() == [1, 1, 1, 1]


def test_case_and_punctuation_do_not_change_buckets() -> None:
    a = ngram_buckets("Hello, World!", 1 << 17)
    b = ngram_buckets("hello world", 1 << 17)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_char_ngrams_stay_inside_words() -> None:
    # "ab cd": padded " ab " + " cd ": 2-grams 3+3, 3-grams 2+2, 4-grams 1+1, 5-grams 0,
    # plus two words and one bigram = 15 n-grams; none may span the two words.
    _, counts = ngram_buckets("ab cd", 1 << 20)
    assert int(counts.sum()) == 15


def test_tfidf_vector_is_unit_norm_and_empty_text_is_empty() -> None:
    idf = np.ones(1 << 10, dtype=np.float32)
    _, values = sparse_tfidf("some words and some more words", 1 << 10, idf)
    assert abs(float(np.linalg.norm(values)) - 1.0) < 1e-5
    indices, values = sparse_tfidf("  ", 1 << 10, idf)
    assert indices.size == 0 and values.size == 0
