"""chrF as sacreBLEU defines it, and the project's translation set."""

from __future__ import annotations

import pytest

from alize.cli.evaltext import chrf, first_line, translation_pairs


def test_chrf_bounds_and_order() -> None:
    ref = ["Le train pour Lyon part à huit heures."]
    assert chrf(ref, ref) == pytest.approx(100.0)
    assert chrf(["0000 1111"], ref) == 0.0
    close = chrf(["Le train pour Lyon part à neuf heures."], ref)
    far = chrf(["Un bus va partir."], ref)
    assert 0 < far < close < 100


def test_chrf_ignores_whitespace_and_matches_a_hand_count() -> None:
    assert chrf(["ab c"], ["abc"]) == pytest.approx(100.0)
    # hyp "ab", ref "abc": unigrams 2/2 precision, 2/3 recall; bigrams 1/1, 1/2; trigram: 0 hyp, 1 ref
    p = (1 + 1 + 0) / 3
    r = (2 / 3 + 1 / 2 + 0) / 3
    assert chrf(["ab"], ["abc"]) == pytest.approx(100 * 5 * p * r / (4 * p + r))


def test_the_set_covers_four_languages() -> None:
    pairs = translation_pairs()
    assert len(pairs) == 40 and {p.target_lang for p in pairs} == {"fr", "de", "es", "it"}
    assert first_line('\n"Bonjour."\nThis means hello.') == "Bonjour."
